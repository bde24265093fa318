# frozen_string_literal: true

# The request_timeout tests' app (test/test_request_timeout.rb): requests that outlive the
# deadline in the ways an app can (a Ruby sleep, a busy loop, a response begun then stalled, a
# block that defers interrupts), each leaving a mark file from its `ensure` or when it ends;
# quick requests; the in-process stats.
require "json"

# How long anything here waits at most (a failed test must not leave threads held for ever).
LIMIT = 60

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def mark(query, text)
  File.write(query["mark"], text) if query["mark"]
end

run lambda { |env|
  query = Rack::Utils.parse_query(env["QUERY_STRING"])
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
  when "/stats"
    [200, { "content-type" => "application/json" }, [JSON.generate(Catamount.stats)]]
  else
    [200, { "content-type" => "text/plain" }, ["quick\n"]]
  end
}
