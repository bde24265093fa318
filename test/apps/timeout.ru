# frozen_string_literal: true

# The request_timeout tests' app (test/test_request_timeout.rb): requests that outlive the
# deadline in the ways an app can (a Ruby sleep, a busy loop, a response begun then stalled, a
# block that defers interrupts), each leaving a mark file from its `ensure` or when it ends;
# connections the app takes (a full hijack, a 101 upgrade) and keeps past the deadline; quick
# requests; the in-process stats. `only=<pid>`: any route, answered 409 at once by any other
# process (a cluster test's way to reach one worker).
require "json"
require "io/wait"

# How long anything here waits at most (a failed test must not leave threads held for ever).
LIMIT = 60

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def mark(query, text)
  File.write(query["mark"], text) if query["mark"]
end

# On a connection the app took: says "taken", then answers the client's next line (which the
# test sends once the deadline has passed) and closes.
def echo_line(io)
  io.write("taken\n")
  line = io.wait_readable(LIMIT) && io.gets
  io.write("echo #{line}")
rescue IOError, SystemCallError
  nil
ensure
  io.close unless io.closed?
end

run lambda { |env|
  query = Rack::Utils.parse_query(env["QUERY_STRING"])
  return [409, {}, ["elsewhere #{Process.pid}\n"]] if query["only"] && Integer(query["only"]) != Process.pid

  case env["PATH_INFO"]
  when "/sleep"
    # `rescue => e` must not see the timeout (not a StandardError); `ensure` runs.
    begin
      sleep Float(query.fetch("s", LIMIT))
      mark(query, "finished")
      [200, { "content-type" => "text/plain" }, ["slept\n"]]
    rescue => e # rubocop:disable Style/RescueStandardError -- the point: what apps write
      mark(query, "rescued #{e.class}")
      raise
    ensure
      mark(query, "ensure #{$!.class}") if $!
    end
  when "/busy"
    # Pure Ruby, never blocking: interrupts are still checked between instructions.
    begin
      x = 0
      limit = now + LIMIT
      x += 1 while now < limit
      [200, {}, ["busy #{x}\n"]]
    ensure
      mark(query, "ensure #{$!.class}") if $!
    end
  when "/stream"
    # The head and a first part go out, then the body stalls.
    body = Enumerator.new do |out|
      out << "first\n"
      begin
        sleep LIMIT
        out << "never\n"
      ensure
        mark(query, "ensure #{$!.class}") if $!
      end
    end
    [200, { "content-type" => "text/plain" }, body]
  when "/deaf"
    # No exception reaches this block until the test creates the release file: the thread is
    # lost past the grace, then comes back.
    Thread.handle_interrupt(Object => :never) do
      limit = now + LIMIT
      sleep 0.02 until File.exist?(query.fetch("release")) || now > limit
    end
    [200, {}, ["deaf\n"]]
  when "/hijack"
    # Full hijack: the pool thread keeps the connection (its request) past the deadline, or
    # with `detach` a thread of the app's does.
    io = env["rack.hijack"].call
    query["detach"] ? Thread.new { echo_line(io) } : echo_line(io)
    [200, {}, []]
  when "/upgrade"
    # A 101 whose callable (Rack 2's `rack.hijack` header) talks on the pool thread.
    [101, { "upgrade" => "echo", "connection" => "upgrade", "rack.hijack" => ->(io) { echo_line(io) } }, []]
  when "/stats"
    [200, { "content-type" => "application/json" }, [JSON.generate(Catamount.stats)]]
  else
    [200, { "content-type" => "text/plain" }, ["quick\n"]]
  end
}
