# frozen_string_literal: true

require "helper"

# The fiber mode's limits lifted (issue 25): `request_timeout` reaches the overdue request's
# fiber, waiting or running, while the other requests of its thread go on. Every server runs
# one pool thread (`-t 1:1`), so the requests of a test share it. App: fibers_limits.ru.
class TestFibersLimits < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  TIMEOUT_LOG = /! Request timeout: GET (\S+) still running after [\d.]+ s \(request_timeout 1(\.0)? s\); answered 503; raising Catamount::RequestTimeout into its thread\. Its backtrace:\n(  .*\n)+/

  def fiber_server(config = "", *args)
    start_with_config("fiber_scheduler\n#{config}", "-t", "1:1", *args, app: "fibers_limits.ru")
  end

  def send_request(port, path)
    sock = connect(port)
    sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\n\r\n")
    sock
  end

  # Accepts the connections of `ids` requests (each names itself first); returns them by id.
  def accept_named(listener, ids)
    ids.to_h do
      assert listener.wait_readable(20), "a request did not connect"
      peer = listener.accept
      assert peer.wait_readable(20), "a request did not name itself"
      [peer.gets.chomp, peer]
    end.tap { |peers| assert_equal ids.sort, peers.keys.sort }
  end

  # A request of the thread that waits on its client, no deadline applying to it (it took its
  # connection), there before the overdue one is sent and after it timed out.
  def neighbour(server)
    sock = send_request(server.port, "/hijack")
    assert sock.wait_readable(20), "the neighbour did not start"
    assert_equal "taken\n", sock.gets
    sock
  end

  # The overdue request gets the thread mode's answer and log line, its `ensure` sees the
  # exception, and the thread's other request (waiting on its client meanwhile) then finishes.
  def assert_timed_out_beside(server, overdue, mark, neighbour)
    response = read_response(overdue, timeout: 30)
    assert_equal 503, response.status
    assert_equal "Service Unavailable\n", response.body
    assert_equal "close", response.headers["connection"]
    assert_equal "ensure Catamount::RequestTimeout", wait_for_file(mark, timeout: 20)
    log = server.wait_for(TIMEOUT_LOG, stream: :stderr)[0]
    neighbour.write("after\n")
    assert_equal "echo after\n", read_until_close(neighbour, timeout: 20)
    assert_equal "hello", get(server.port, "/hello").body
    refute_match(/fiber ended by|Error reached|RequestTimeout \(/, server.stderr)
    log
  end

  # Sends `path` (with a mark file) beside a neighbour, with `request_timeout 1`; the log line.
  def time_out(path, server = fiber_server("request_timeout 1\n"), beside = neighbour(server))
    mark = File.join(scratch_dir, "mark")
    overdue = send_request(server.port, "#{path}#{path.include?('?') ? '&' : '?'}mark=#{mark}")
    yield if block_given?
    assert_timed_out_beside(server, overdue, mark, beside)
  end

  def test_a_sleeping_request_times_out_and_its_neighbour_finishes
    assert_match(/fibers_limits\.ru:\d+:in `sleep'/, time_out("/sleep"))
  end

  def test_a_request_blocked_on_a_socket_read_times_out_and_its_neighbour_finishes
    listener = TCPServer.new("127.0.0.1", 0)
    peer = nil
    time_out("/read?id=overdue&port=#{listener.addr[1]}") do
      peer = accept_named(listener, ["overdue"])["overdue"]
    end
  ensure
    peer&.close
    listener&.close
  end

  def test_a_busy_request_that_never_yields_times_out_and_its_neighbour_finishes
    time_out("/busy")
  end

  def test_a_wait_in_a_fiber_the_request_resumed_times_out
    assert_match(/fibers_limits\.ru:\d+:in `resume'/, time_out("/nested-sleep"))
  end

  # A request waiting on a child process (until the test releases it) leaves its thread free:
  # another request is answered meanwhile.
  def assert_child_wait_frees_the_thread(path, answer)
    server = fiber_server
    started = File.join(scratch_dir, "started")
    release = File.join(scratch_dir, "release")
    waiting = send_request(server.port, "#{path}?started=#{started}&release=#{release}")
    assert wait_until(timeout: 20) { File.exist?(started) }, "the child did not start"
    assert_equal "hello", get(server.port, "/hello").body
    File.write(release, "")
    assert_equal answer, read_response(waiting, timeout: 30).body
  end

  def test_process_wait_lets_the_thread_serve_others
    assert_child_wait_frees_the_thread("/wait", "exit 7")
  end

  def test_backticks_let_the_thread_serve_others
    assert_child_wait_frees_the_thread("/backtick", "out 7")
  end

  # The Responder's wait for a slow client (past max_buffered_response, a stream cannot spill)
  # lets the thread serve its other requests.
  def test_a_client_that_reads_no_stream_leaves_the_thread_free
    server = fiber_server("max_buffered_response 64 * 1024\n", "--control-url", "tcp://127.0.0.1:0", "--control-token", "t")
    control = Integer(server.stdout[%r{Starting control server on http://127\.0\.0\.1:(\d+)}, 1])
    slow = Socket.new(:INET, :STREAM)
    slow.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
    slow.connect(Socket.sockaddr_in(server.port, "127.0.0.1"))
    slow.write("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    # Past the bound the stream's producer waits for its client.
    assert wait_until(timeout: 30) { control_buffered(control) > 64 << 10 }, "the stream never passed its bound"
    assert_equal "hello", get(server.port, "/hello").body
    assert_match(/\AHTTP\/1\.1 200 /, slow.readpartial(4096))
  ensure
    slow&.close
  end

  def control_buffered(port)
    JSON.parse(get(port, "/stats?token=t").body)["response_bytes_buffered"]
  end

  # A request that kills its pool thread takes the thread's other requests with it: each is
  # answered (500) or closed at once, not left open for ever, and the pool starts another thread.
  def test_a_killed_thread_leaves_no_request_hanging
    server = fiber_server
    listener = TCPServer.new("127.0.0.1", 0)
    held = send_request(server.port, "/read?id=held&port=#{listener.addr[1]}")
    peer = accept_named(listener, ["held"])["held"]
    killer = send_request(server.port, "/kill")
    assert_equal 500, read_response(killer, timeout: 20).status
    assert_equal 500, read_response(held, timeout: 20).status
    assert_equal "hello", get(server.port, "/hello").body
  ensure
    peer&.close
    listener&.close
  end
end
