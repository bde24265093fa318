# frozen_string_literal: true

# The IO-bound marking tests' app (test/test_io_threads.rb): requests that wait on a socket the
# test controls, marked IO-bound (`env["puma.mark_as_io_bound"]`) or not.
require "json"
require "socket"

# How long a held request waits for the test at most (a failed test must not hold threads for
# ever).
HOLD_LIMIT = 15

def query(env)
  env["QUERY_STRING"].split("&").to_h { |pair| pair.split("=", 2) }
end

# Connects to the test's port, says "in NAME", then obeys one line at a time: `stats` answers
# `Catamount.stats` as one JSON line, `mark` marks the request IO-bound (again), `go` ends it.
def hold(env, q)
  control = Socket.tcp("127.0.0.1", Integer(q.fetch("port")), connect_timeout: 5)
  control.write("in #{q.fetch('name')}\n")
  loop do
    break unless control.wait_readable(HOLD_LIMIT)

    case control.gets&.chomp
    when "stats" then control.write("#{JSON.generate(Catamount.stats)}\n")
    when "mark" then env["puma.mark_as_io_bound"].call
    else break
    end
  end
  [200, {}, [q.fetch("name")]]
ensure
  control&.close
end

run lambda { |env|
  q = query(env)
  mark = env["puma.mark_as_io_bound"]
  case env["PATH_INFO"]
  when "/hold"
    mark.call if q["mark"] == "1"
    hold(env, q)
  when "/stats" then [200, {}, [JSON.generate(Catamount.stats)]]
  when "/key"
    # What the key holds: a frozen callable that answers nil, the same one for every request
    # a thread serves.
    [200, {}, [JSON.generate(callable: mark.respond_to?(:call), frozen: mark.frozen?, answer: mark.call,
                             twice: mark.call, id: mark.object_id)]]
  else [404, {}, []]
  end
}
