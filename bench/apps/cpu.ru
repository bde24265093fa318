# frozen_string_literal: true

# CPU-bound: about 2 ms of Ruby work per request on the bench machine (a fixed amount of work,
# so both servers do the same).
ROUNDS = Integer(ENV.fetch("BENCH_CPU_ROUNDS", "80000"))

run(lambda do |_env|
  acc = 0
  ROUNDS.times { |i| acc = (acc * 31 + i) & 0xffff }
  [200, { "content-type" => "text/plain" }, ["#{acc}\n"]]
end)
