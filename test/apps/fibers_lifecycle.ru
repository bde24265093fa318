# frozen_string_literal: true

# The fiber mode's lifecycle app (test/test_fibers_lifecycle.rb): a fiber the request schedules
# that never ends, a sleep without a duration and the requests that wake it from another
# thread, a child wait left early beside a request that waits for its own child, a burst of
# requests that wait together, and what the process sees (busy threads, live fibers).
require "timeout"

# How long anything here waits at most (a failed test must not leave requests held for ever).
LIMIT = 20

$inside = 0 # /burst requests inside now, and the most at once
$most = 0
$sleeper = nil # the thread a /sleep request sleeps on
$lock = Mutex.new

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def text(body, status = 200)
  [status, { "content-type" => "text/plain" }, [body]]
end

def live_fibers
  ObjectSpace.each_object(Fiber).count(&:alive?)
end

# Whether the child `pid` ended (a zombie), or is gone (reaped).
def ended?(pid)
  File.read("/proc/#{pid}/stat")[/\) (\w)/, 1] == "Z"
rescue Errno::ENOENT, Errno::ESRCH
  true
end

# A child that runs until `release` exists (at most LIMIT).
def child_until(release)
  spawn("sh", "-c", "i=0; while [ ! -e #{release} ] && [ $i -lt #{LIMIT * 100} ]; do sleep 0.01; i=$((i+1)); done",
        out: File::NULL)
end

run lambda { |env|
  q = Rack::Utils.parse_query(env["QUERY_STRING"])
  case env["PATH_INFO"]
  when "/hello"
    text("hello")
  when "/background"
    # Outlives its request, sleeping for ever; its `ensure` says how it ended.
    Fiber.schedule do
      File.write(q["started"], "started")
      sleep
    ensure
      File.write(q["mark"], "ensure #{$!.class}")
    end
    text("scheduled")
  when "/busy"
    text(Catamount.stats[:busy_threads].to_s)
  when "/sleep"
    $sleeper = Thread.current
    sleep
    $sleeper = nil
    text("woken")
  when "/wake"
    # Only ever runs while /sleep sleeps when both share the one thread (nothing of /sleep
    # waits before its sleep); another thread wakes it.
    next text("nobody sleeps") unless (sleeper = $sleeper)

    Thread.new { sleeper.public_send(q["how"]) }.join
    text("sent")
  when "/wait-any"
    # Waits for any child (its own runs until released), and gives up (a Timeout), or is cut
    # short by request_timeout (`cut=request_timeout`).
    # Its `ensure` leaves a mark (request_timeout answers before the request has unwound).
    child_until(q["release"])
    begin
      if q["cut"] == "request_timeout"
        Process.wait(-1)
      else
        Timeout.timeout(0.2) { Process.wait(-1) }
      end
      text("a child ended")
    rescue Timeout::Error
      text("gave up")
    ensure
      File.write(q["mark"], "unwound") if q["mark"]
    end
  when "/wait-own"
    # A child that ends at once: left unreaped until this request waits for it, unless some
    # other wait reaps it first.
    pid = spawn("true")
    deadline = now + LIMIT
    sleep 0.01 until ended?(pid) || now > deadline
    begin
      Process.wait(pid)
      text("exit #{$?.exitstatus}")
    rescue Errno::ECHILD
      text("ECHILD: reaped by another wait")
    end
  when "/burst"
    # Waits until `n` requests are inside at once; answers how many and the fibers alive then.
    n = Integer(q["n"])
    begin
      $inside += 1
      $most = [$most, $inside].max
      deadline = now + LIMIT
      sleep 0.005 while $most < n && now < deadline
      text("#{$most} #{live_fibers}")
    ensure
      $inside -= 1
    end
  when "/fibers"
    text(live_fibers.to_s)
  when "/lock"
    # Leaves the lock held (an app bug): whose is it next?
    $lock.lock
    text("locked")
  when "/owned"
    owned = $lock.owned?
    $lock.unlock if owned
    text("owned=#{owned} locked=#{$lock.locked?}")
  else
    text("not found", 404)
  end
}
