# frozen_string_literal: true

require "helper"

# The fiber mode's lifecycle (issue 25, the review's findings): a fiber the app scheduled that
# never ends leaves its thread idle and lets the server stop; `sleep` without a duration wakes
# on Thread#wakeup/#run; a child wait left early leaves no helper behind to reap another
# request's child; idle request fibers are trimmed after a burst. App: fibers_lifecycle.ru.
class TestFibersLifecycle < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def fiber_server(config = "", threads: "1:1")
    start_with_config("fiber_scheduler\n#{config}", "-t", threads, app: "fibers_lifecycle.ru")
  end

  def send_request(port, path)
    sock = connect(port)
    sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sock
  end

  # As a thread-mode thread whose request started a Thread: the pool thread counts as idle once
  # its request is answered, and a stop ends the fiber (raised in where it waits) instead of
  # waiting for it for ever.
  def test_a_fiber_the_app_scheduled_that_never_ends_leaves_its_thread_idle_and_the_server_stops
    server = fiber_server(threads: "2:2")
    started = File.join(scratch_dir, "started")
    mark = File.join(scratch_dir, "mark")
    assert_equal "scheduled", get(server.port, "/background?started=#{started}&mark=#{mark}").body
    assert wait_for_file(started, timeout: 20), "the scheduled fiber did not start"
    # The other thread answers: its own request is the only busy one.
    assert wait_until(timeout: 10) { get(server.port, "/busy").body == "1" },
           "the thread of the scheduled fiber still counts as busy"
    assert_equal "hello", get(server.port, "/hello").body
    server.signal("INT")
    assert_predicate server.wait_exit(timeout: 20), :success?
    assert_equal "ensure Catamount::FiberScheduler::Abandoned", File.read(mark)
  end

  # A thread-mode `sleep` returns when another thread wakes its thread; so does a fiber's, for
  # both ways of waking it.
  def test_a_sleep_without_a_duration_wakes_on_thread_wakeup_and_run
    server = fiber_server
    %w[wakeup run].each do |how|
      sleeping = send_request(server.port, "/sleep")
      assert wait_until(timeout: 20) { get(server.port, "/wake?how=#{how}").body == "sent" }, "nobody slept"
      assert_equal "woken", read_response(sleeping, timeout: 10).body, "Thread##{how} did not wake the sleep"
    ensure
      sleeping&.close
    end
  end

  # `Process.wait(-1)` gives up (a Timeout) while its child runs on: a child of the next request
  # is still that request's to wait for, not reaped by the abandoned wait's helper.
  def test_a_child_wait_left_early_does_not_reap_another_requests_child
    server = fiber_server
    release = File.join(scratch_dir, "release")
    assert_equal "gave up", get(server.port, "/wait-any?release=#{release}").body
    assert_equal "exit 0", get(server.port, "/wait-own").body
  ensure
    File.write(release, "") if release
  end

  # The same when request_timeout cuts the wait short.
  def test_a_child_wait_cut_by_request_timeout_does_not_reap_another_requests_child
    server = fiber_server("request_timeout 1\n")
    release = File.join(scratch_dir, "release")
    mark = File.join(scratch_dir, "mark")
    assert_equal 503, get(server.port, "/wait-any?cut=request_timeout&release=#{release}&mark=#{mark}").status
    # The 503 goes out as the deadline passes; the request unwinds after.
    assert wait_for_file(mark, timeout: 20), "the cut request did not unwind"
    assert_equal "exit 0", get(server.port, "/wait-own").body
  ensure
    File.write(release, "") if release
  end

  # After a burst of 20 requests waiting together on the one thread, its idle fibers (one for
  # each) are trimmed once it idles: a few are kept.
  def test_idle_fibers_are_trimmed_after_a_burst
    server = fiber_server
    socks = Array.new(20) { send_request(server.port, "/burst?n=20") }
    bodies = socks.map { |s| read_response(s, timeout: 30).body }
    assert_equal ["20"], bodies.map { |b| b.split[0] }.uniq
    assert_operator bodies.map { |b| Integer(b.split[1]) }.max, :>=, 20
    live = nil
    assert wait_until(timeout: 10) { (live = Integer(get(server.port, "/fibers").body)) <= 8 },
           "#{live} fibers still alive after the burst"
  ensure
    socks&.each(&:close)
  end

  # A lock a request leaves held stays with its fiber, as without fibers it stays with its
  # thread (the decision in docs/architecture.md "Locks"): the next request that fiber serves
  # owns it and can release it, as the next request on that thread does in the thread mode.
  def test_a_lock_a_request_leaves_held_is_the_next_requests_on_its_fiber_as_on_its_thread
    [fiber_server, start_server("-t", "1:1", app: "fibers_lifecycle.ru")].each do |server|
      assert_equal "locked", get(server.port, "/lock").body
      assert_equal "owned=true locked=false", get(server.port, "/owned").body
    end
  end
end
