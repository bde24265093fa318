# frozen_string_literal: true

require "helper"

# The fiber mode (`fiber_scheduler`, issue 25): each request runs in its own Fiber under
# Catamount's scheduler, so one pool thread serves requests that wait (sleeps, sockets, a Mutex,
# Timeout, a name lookup) side by side, up to `max_fibers_per_thread`. Concurrency is shown by the
# app itself (how many requests were inside at once; connections the test accepts before it
# answers any), never by timings. App: fibers.ru.
class TestFibers < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def fiber_server(config = "fiber_scheduler\n", threads: "1:1")
    start_with_config(config, "-t", threads, app: "fibers.ru")
  end

  # Sends each request on its own connection now; returns the sockets.
  def send_all(port, paths)
    paths.map do |path|
      sock = connect(port)
      sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      sock
    end
  end

  # The bodies of the answers to `paths`, all sent at once (each on its own connection).
  def answers(port, paths)
    socks = send_all(port, paths)
    socks.map { |s| read_response(s, timeout: 30).body }
  ensure
    socks&.each(&:close)
  end

  # The next connection to `listener` within `timeout` seconds, or nil.
  def accept_within(listener, timeout)
    listener.wait_readable(timeout) && listener.accept
  end

  def test_concurrent_sleeps_share_one_thread
    server = fiber_server
    assert_equal "Catamount::FiberScheduler blocking=false", get(server.port, "/scheduler").body
    assert_equal ["5"] * 5, answers(server.port, ["/together?g=a&n=5"] * 5)
  end

  def test_socket_waits_share_one_thread
    server = fiber_server
    listener = TCPServer.new("127.0.0.1", 0)
    socks = send_all(server.port, ["/read?port=#{listener.addr[1]}"] * 4)
    # Every request is inside, connected and waiting on its socket, before any is answered.
    peers = Array.new(4) { accept_within(listener, 20) }
    assert peers.all?, "only #{peers.compact.size} of 4 requests connected at once"
    # Stats count requests for the capacity (64 a thread, less the four and this one), threads
    # for the rest.
    assert_equal "59 1 1", get(server.port, "/stats").body
    peers.each_with_index { |peer, i| peer.write("line #{i}\n") }
    bodies = socks.map { |s| read_response(s, timeout: 20).body }
    assert_equal (0..3).map { |i| "read line #{i}" }.sort, bodies.sort
  ensure
    peers&.compact&.each(&:close)
    socks&.each(&:close)
    listener&.close
  end

  def test_the_limit_holds_the_next_request_back
    server = fiber_server("fiber_scheduler\nmax_fibers_per_thread 2\n")
    listener = TCPServer.new("127.0.0.1", 0)
    socks = send_all(server.port, ["/read?port=#{listener.addr[1]}"] * 3)
    first = Array.new(2) { accept_within(listener, 20) }
    assert first.all?, "the first two requests did not both connect"
    assert_nil accept_within(listener, 1), "a third request ran beyond max_fibers_per_thread 2"
    first[0].write("one\n")
    third = accept_within(listener, 20)
    assert third, "the third request did not run once one ended"
    first[1].write("two\n")
    third.write("three\n")
    assert_equal ["read one", "read three", "read two"], socks.map { |s| read_response(s, timeout: 20).body }.sort
  ensure
    [*first, third].compact.each(&:close)
    socks&.each(&:close)
    listener&.close
  end

  def test_off_by_default_a_sleep_holds_the_only_thread
    server = start_server("-t", "1:1", app: "fibers.ru")
    assert_equal "NilClass blocking=true", get(server.port, "/scheduler").body
    assert_equal %w[1 1], answers(server.port, ["/together?g=a&n=2&limit=1"] * 2)
  end

  def test_a_busy_request_does_not_stop_another_thread
    server = fiber_server(threads: "2:2")
    spinning = send_all(server.port, ["/spin"]).first
    # The spin never yields its fiber; the other pool thread serves meanwhile.
    assert wait_until(timeout: 20) { get(server.port, "/hello").body == "hello" }
    assert_equal "released", get(server.port, "/release").body
    assert_equal "spun", read_response(spinning, timeout: 20).body
  ensure
    spinning&.close
  end

  def test_fiber_locals_are_per_request_on_a_shared_thread
    server = fiber_server
    bodies = answers(server.port, ["/locals?g=ab&id=a&n=2", "/locals?g=ab&id=b&n=2"])
    threads = bodies.map { |b| b[/thread=(\d+)/, 1] }
    assert_equal 1, threads.uniq.size, "both requests ran on the one thread"
    assert_equal ["nil a 2", "nil b 2"], bodies.map { |b| b.sub(/ thread=\d+/, "") }
    # The next request on that thread starts clean too.
    assert_match(/\Anil c 1 /, get(server.port, "/locals?g=c&id=c&n=1").body)
  end

  # A thread's finished request fiber serves its next request, without the locals of the one
  # before; the thread mode keeps a thread's locals from one request to the next (as Puma).
  def test_a_reused_fiber_starts_without_the_last_requests_locals
    server = fiber_server
    first = get(server.port, "/reuse?id=a").body
    fiber = first[/fiber=(\d+)/, 1]
    assert_equal "nil fiber=#{fiber}", first
    assert_equal "nil fiber=#{fiber}", get(server.port, "/reuse?id=b").body, "the fiber reused, its local gone"

    threads = start_server("-t", "1:1", app: "fibers.ru")
    get(threads.port, "/reuse?id=a")
    assert_match(/\A"a" fiber=/, get(threads.port, "/reuse?id=b").body)
  end

  def test_timeout_mutex_and_name_lookup_go_through_the_scheduler
    server = fiber_server
    assert_equal "timed out", get(server.port, "/timeout").body
    assert_equal ["locked 1"] * 2, answers(server.port, ["/mutex?g=m&n=2"] * 2)
    assert_includes get(server.port, "/resolve").body.split(","), "127.0.0.1"
  end

  def test_the_apps_own_fibers_and_threads_work_inside_a_request
    server = fiber_server
    assert_equal ["1,2,3,4,5,6"] * 2, answers(server.port, ["/nested"] * 2)
  end

  def test_an_error_in_a_fiber_is_a_500_and_the_thread_goes_on
    server = fiber_server
    listener = TCPServer.new("127.0.0.1", 0)
    held = send_all(server.port, ["/read?port=#{listener.addr[1]}"]).first
    peer = accept_within(listener, 20)
    assert peer, "the held request did not connect"
    assert_equal 500, get(server.port, "/raise").status
    assert_equal "hello", get(server.port, "/hello").body
    peer.write("still here\n")
    assert_equal "read still here", read_response(held, timeout: 20).body
    server.wait_for(/Rack app \("GET \/raise" .*boom in a fiber/, stream: :stderr)
  ensure
    peer&.close
    held&.close
    listener&.close
  end

  def test_io_threads_with_fibers_are_refused_at_boot
    path = File.join(scratch_dir, "io_threads.rb")
    File.write(path, "fiber_scheduler\nmax_io_threads 2\n")
    server = start_server("-C", path, "-b", "tcp://127.0.0.1:0", app: "fibers.ru", boot: false)
    server.wait_for(/max_io_threads together with fiber_scheduler is not supported yet/, stream: :stderr)
    refute_predicate server.wait_exit, :success?
  end

  def test_marking_a_request_io_bound_does_nothing_with_fibers
    server = fiber_server
    assert_equal "marked, io_threads 0", get(server.port, "/mark").body
  end
end
