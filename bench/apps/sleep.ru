# frozen_string_literal: true

# IO-bound: 20 ms waiting (a database or an API call), the GVL released meanwhile.
run(lambda do |_env|
  sleep 0.02
  [200, { "content-type" => "text/plain" }, ["slept\n"]]
end)
