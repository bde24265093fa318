# frozen_string_literal: true

# The fiber mode's turns app (test/test_fibers_turns.rb): requests that run Ruby without ever
# waiting (each bounded: SPIN seconds at most, so a failed test leaves nothing running for
# long), a request that waits for a line on a socket the test holds, and what is left of Ruby's
# hooks (TracePoint.stat: the first turns left them running, and line tracing on, for every
# thread).
require "socket"
require "timeout"

SPIN = 10

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def text(body)
  [200, { "content-type" => "text/plain" }, [body]]
end

# The test's file says the request started; its `ensure` write says how it ended.
def mark(query, what)
  File.write(query["mark"], what) if query["mark"]
end

$read = false
$last = nil

run lambda { |env|
  q = Rack::Utils.parse_query(env["QUERY_STRING"])
  case env["PATH_INFO"]
  when "/wait"
    # Waits (in the scheduler) for a line from the test's listener.
    sock = TCPSocket.new("127.0.0.1", Integer(q["port"]))
    line = sock.wait_readable(SPIN * 2) && sock.gets
    sock.close
    $read = true
    text("read #{line&.chomp}")
  when "/spin"
    # Never waits: runs until the waiting request has read its line.
    mark(q, "spinning")
    deadline = now + SPIN
    nil until $read || now > deadline
    text($read ? "the other request ran" : "nobody else ran")
  when "/alternate"
    # Never waits once started (after the test's line, if it gives a port): runs until it has
    # seen another request run between two of its steps `q["turns"]` times (at most SPIN s).
    if q["port"]
      sock = TCPSocket.new("127.0.0.1", Integer(q["port"]))
      sock.wait_readable(SPIN * 2) && sock.gets
      sock.close
    end
    mark(q, "alternating")
    me = Fiber.current
    $last = me
    seen = 0
    deadline = now + SPIN
    while seen < Integer(q["turns"]) && now < deadline
      next if $last.equal?(me)

      seen += 1
      $last = me
    end
    text("saw the other run #{seen} times")
  when "/timeout"
    # Alone on its thread, never waiting: only a turn lets its Timeout fire.
    begin
      Timeout.timeout(Float(q.fetch("s", "0.2"))) do
        deadline = now + SPIN
        nil until now > deadline
        text("not timed out")
      end
    rescue Timeout::Error => e
      text("timed out: #{e.class}")
    end
  when "/kill"
    # Waits for the test's line, then kills its pool thread (with the thread's other requests).
    sock = TCPSocket.new("127.0.0.1", Integer(q["port"]))
    sock.wait_readable(SPIN * 2) && sock.gets
    sock.close
    Thread.current.kill
  when "/hooks"
    # Ruby's hook list: [active, deleted] hooks per list.
    text(TracePoint.stat.values.inspect)
  when "/hello"
    text("hello")
  else
    [404, {}, ["not found"]]
  end
}
