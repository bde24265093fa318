# frozen_string_literal: true

# The fiber mode's app (test/test_fibers.rb): requests that wait the ways an app does (a sleep
# until enough requests are inside at once, a read from a socket the test controls, a Mutex, a
# Timeout, a name lookup), a busy loop that never yields, fiber-local state, an error, the
# in-process stats.
require "socket"
require "timeout"

# How long anything here waits at most (a failed test must not leave requests held for ever).
LIMIT = 20

$inside = Hash.new(0) # requests inside /together right now, by group
$most = Hash.new(0) # and the most there were at once
$spin = false
$lock = Mutex.new

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

# Sleeps in short steps until `n` requests of `group` were inside at once, or `limit` seconds
# passed; yields how many were inside at most.
def together(group, n, limit)
  $inside[group] += 1
  $most[group] = [$most[group], $inside[group]].max
  deadline = now + limit
  sleep 0.005 while $most[group] < n && now < deadline
  yield $most[group]
ensure
  $inside[group] -= 1
end

def text(body, status = 200)
  [status, { "content-type" => "text/plain" }, [body]]
end

run lambda { |env|
  q = Rack::Utils.parse_query(env["QUERY_STRING"])
  case env["PATH_INFO"]
  when "/hello"
    text("hello")
  when "/scheduler"
    text("#{Fiber.scheduler.class} blocking=#{Fiber.current.blocking?}")
  when "/together"
    together(q["g"], Integer(q["n"]), Float(q.fetch("limit", LIMIT))) { |most| text(most.to_s) }
  when "/read"
    # Waits on a socket the test controls: answers the line the test writes.
    sock = TCPSocket.new("127.0.0.1", Integer(q["port"]))
    line = sock.wait_readable(LIMIT) && sock.gets
    sock.close
    text("read #{line&.chomp}")
  when "/locals"
    before = Thread.current[:request]
    Thread.current[:request] = q["id"]
    together(q["g"], Integer(q["n"]), LIMIT) do |most|
      text("#{before.inspect} #{Thread.current[:request]} #{most} thread=#{Thread.current.object_id}")
    end
  when "/reuse"
    # One request after another: which fiber served it, and the fiber-local the one before left.
    before = Thread.current[:request]
    Thread.current[:request] = q["id"]
    text("#{before.inspect} fiber=#{Fiber.current.object_id}")
  when "/timeout"
    begin
      Timeout.timeout(0.05) { sleep LIMIT }
      text("not timed out")
    rescue Timeout::Error
      text("timed out")
    end
  when "/mutex"
    # Two requests on one thread meet at a Mutex: the second waits (block) until the first
    # unlocks (unblock), having slept while holding it.
    $lock.synchronize do
      together(q["g"], Integer(q["n"]), 0.2) { |most| text("locked #{most}") }
    end
  when "/resolve"
    text(Addrinfo.getaddrinfo("localhost", nil, nil, :STREAM).map(&:ip_address).uniq.sort.join(","))
  when "/nested"
    # The app's own fibers and threads, each waiting inside the request's fiber: an external
    # Enumerator, a resumed Fiber, a scheduled Fiber met through a Queue, a joined Thread.
    enum = Enumerator.new { |y| sleep 0.001; y << 1; sleep 0.001; y << 2 }
    resumed = Fiber.new { sleep 0.001; Fiber.yield 3; sleep 0.001; 4 }
    queue = Queue.new
    Fiber.schedule { sleep 0.001; queue << 5 }
    thread = Thread.new { sleep 0.001; 6 }
    text([enum.next, enum.next, resumed.resume, resumed.resume, queue.pop, thread.value].join(","))
  when "/spin"
    $spin = true
    deadline = now + LIMIT
    nil while $spin && now < deadline
    text("spun")
  when "/release"
    $spin = false
    text("released")
  when "/mark"
    env["puma.mark_as_io_bound"].call
    text("marked, io_threads #{Catamount.stats[:io_threads]}")
  when "/stats"
    text(Catamount.stats.values_at(:pool_capacity, :busy_threads, :running).join(" "))
  when "/raise"
    sleep 0.001
    raise "boom in a fiber"
  else
    text("not found", 404)
  end
}
