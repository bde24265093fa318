# frozen_string_literal: true

require "helper"

# The fiber mode's turns (issue 25: "a request that never yields does not starve the others
# beyond what threads would"): a request that runs Ruby without waiting gives the other requests
# of its thread turns, its own `Timeout` fires, and Ruby's hooks are left as they were (the
# first turns, taken out in aa03e16, left line tracing on for every thread). Every server runs
# one pool thread (`-t 1:1`), so the requests of a test share it. App: fibers_turns.ru. Which
# request ran is shown by the app itself, never by timings.
class TestFibersTurns < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def setup
    @dir = Dir.mktmpdir("catamount-fibers-turns")
    File.write(File.join(@dir, "puma.rb"), "fiber_scheduler\n")
    @server = start_server("-C", File.join(@dir, "puma.rb"), "-t", "1:1", "-b", "tcp://127.0.0.1:0",
                           app: "fibers_turns.ru")
    @listener = TCPServer.new("127.0.0.1", 0)
  end

  def teardown
    super
    @listener&.close
    FileUtils.rm_rf(@dir)
  end

  def send_request(path)
    sock = connect(@server.port)
    sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    (@sockets ||= []) << sock
    sock
  end

  # A request that waits in the app for a line on a socket the test holds (so its thread takes
  # the next request): [its connection, the app's socket (write a line to it)].
  def waiting_request(path)
    waiting = send_request("#{path}#{path.include?('?') ? '&' : '?'}port=#{@listener.addr[1]}")
    assert @listener.wait_readable(20), "the waiting request never reached the app"
    app_side = @listener.accept
    @sockets << app_side
    [waiting, app_side]
  end

  # Sends `path` with a mark file, and waits until the app has started it.
  def started(path, what)
    mark = File.join(@dir, "mark-#{what}")
    sock = send_request("#{path}#{path.include?('?') ? '&' : '?'}mark=#{mark}")
    assert_equal what, wait_for_file(mark, timeout: 20), "the request never started"
    sock
  end

  # Ruby's hook lists, [active, deleted] hooks each.
  def hooks
    get(@server.port, "/hooks").body
  end

  # A request waits; a request that never waits runs beside it (the thread took it while the
  # first waited); the first one's line arrives: it gets a turn to read it and is answered while
  # the second still runs, which ends only once the first has read.
  def test_a_request_that_never_waits_gives_turns_to_the_request_beside_it
    waiting, app_side = waiting_request("/wait")
    spinning = started("/spin", "spinning")
    app_side.write("go\n")
    assert_equal "read go", read_response(waiting, timeout: 20).body
    assert_equal "the other request ran", read_response(spinning, timeout: 20).body
  ensure
    (@sockets || []).each(&:close)
  end

  # Two requests that never wait share the thread in turns, each seeing the other run many
  # times; no hook of Ruby's is left (active or deleted) afterwards.
  def test_two_requests_that_never_wait_take_turns_and_leave_no_hooks
    before = hooks
    second, app_side = waiting_request("/alternate?turns=10")
    first = started("/alternate?turns=10", "alternating")
    app_side.write("go\n")
    assert_equal "saw the other run 10 times", read_response(first, timeout: 30).body
    assert_equal "saw the other run 10 times", read_response(second, timeout: 30).body
    assert_equal before, hooks
  ensure
    (@sockets || []).each(&:close)
  end

  # A request kills its thread while a request that never waits gave it its turn: that one is
  # unwound where it runs (`Abandoned`, raised into the thread once it runs on) and answered
  # 500 at once, not left running; the pool starts another thread.
  def test_a_request_that_never_waits_is_unwound_when_its_thread_is_killed
    killer, app_side = waiting_request("/kill")
    spinning = started("/spin", "spinning")
    app_side.write("go\n")
    assert_equal 500, read_response(killer, timeout: 20).status
    assert_equal 500, read_response(spinning, timeout: 5).status
    assert_equal "hello", get(@server.port, "/hello").body
  ensure
    (@sockets || []).each(&:close)
  end

  # Alone on its thread and never waiting, a request's `Timeout.timeout` still fires (its
  # timer is the scheduler's, which runs only when the loop does: at a turn); the hook that
  # raised it is gone afterwards.
  def test_the_timeout_of_a_request_that_never_waits_fires
    before = hooks
    assert_equal "timed out: Timeout::Error", get(@server.port, "/timeout?s=0.2").body
    assert_equal before, hooks
    assert_equal "hello", get(@server.port, "/hello").body
  end
end
