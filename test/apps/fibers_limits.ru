# frozen_string_literal: true

# The fiber mode's limits app (test/test_fibers_limits.rb): requests that outlive
# `request_timeout` in the ways a fiber can (a sleep, a socket read, a busy loop that never
# yields, a sleep inside a Fiber it resumed), each leaving a mark file from its `ensure`; a read
# from a socket the test controls that names itself first (so the test knows which request it
# holds); a neighbour no deadline applies to (it takes its connection: `request_timeout` leaves
# it alone) that waits for its client's line.
require "socket"

# How long anything here waits at most (a failed test must not leave requests held for ever).
LIMIT = 60

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def text(body, status = 200)
  [status, { "content-type" => "text/plain" }, [body]]
end

# Runs the block, leaving "ensure <exception class>" in the mark file when it is cut short.
def marked(query)
  yield
ensure
  File.write(query["mark"], "ensure #{$!.class}") if $! && query["mark"]
end

run lambda { |env|
  q = Rack::Utils.parse_query(env["QUERY_STRING"])
  case env["PATH_INFO"]
  when "/hello"
    text("hello")
  when "/sleep"
    marked(q) do
      sleep Float(q.fetch("s", LIMIT))
      text("slept")
    end
  when "/read"
    # Connects to the test, says which request it is, and answers the line it is sent.
    marked(q) do
      sock = TCPSocket.new("127.0.0.1", Integer(q["port"]))
      sock.write("#{q['id']}\n")
      line = sock.wait_readable(LIMIT) && sock.gets
      sock.close
      text("read #{line&.chomp}")
    end
  when "/busy"
    marked(q) do
      deadline = now + LIMIT
      nil while now < deadline
      text("busy")
    end
  when "/hijack"
    io = env["rack.hijack"].call
    begin
      io.write("taken\n")
      line = io.wait_readable(LIMIT) && io.gets
      io.write("echo #{line}")
    ensure
      io.close
    end
    [200, {}, []]
  when "/backtick", "/wait"
    # A child that says it started, then waits for the test's release file (at most LIMIT);
    # the request waits on it through backticks (a pipe, then the child's exit) or
    # Process.wait.
    script = "touch #{q['started']}; i=0; while [ ! -e #{q['release']} ] && [ $i -lt #{LIMIT * 100} ]; " \
             "do sleep 0.01; i=$((i+1)); done; echo out; exit 7"
    if env["PATH_INFO"] == "/backtick"
      out = `#{script}`
      text("#{out.chomp} #{$?.exitstatus}")
    else
      Process.wait(spawn(script, out: File::NULL))
      text("exit #{$?.exitstatus}")
    end
  when "/stream"
    # An endless streamed body (16 KiB parts, at most 256 MiB), for a client that reads none.
    part = ("x" * 16_384).freeze
    body = Enumerator.new { |out| 16_384.times { out << part } }
    [200, { "content-type" => "text/plain" }, body]
  when "/kill"
    Thread.current.kill
  when "/nested-sleep"
    # The wait happens in a Fiber the request resumed: the request's timeout reaches it there.
    marked(q) { Fiber.new { sleep LIMIT }.resume && text("slept") }
  else
    text("not found", 404)
  end
}
