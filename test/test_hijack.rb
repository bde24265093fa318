# frozen_string_literal: true

require "helper"

# Full hijack (`env["rack.hijack"]`): the app takes the raw connection as a socket IO, with the
# bytes the client sent after the request read first; Catamount writes nothing more on it, does
# not count it as open, and the pool thread is free once app.call returns. App: hijack.ru.
class TestHijack < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  GREETING = "hello from TCPSocket (true)\n"

  # Sends a hijacking request (with `extra` bytes in the same write) and reads the app's
  # greeting line.
  def hijack(port, path = "/echo", extra: "")
    sock = connect(port)
    sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\n\r\n#{extra}")
    sock
  end

  # Everything the app sends on a hijacked connection until it closes it.
  def hijacked_output(port, path = "/echo", extra: "")
    sock = hijack(port, path, extra: extra)
    read_until_close(sock)
  ensure
    sock&.close
  end

  def hijack_server(*args)
    start_server(*args, app: "hijack.ru")
  end

  def stats(port)
    JSON.parse(get(port, "/stats").body)
  end

  # With `log_requests`, a hijacked request gets an access line with HIJACKED in place of a status
  # and length (as Puma's), once app.call returned.
  def test_the_access_log_marks_a_hijacked_request
    server = hijack_server("--log-requests")
    assert_equal "#{GREETING}quit", hijacked_output(server.port, "/echo?a=1", extra: "quit")
    server.wait_for(%r{^127\.0\.0\.1 - - \[[^\]]+\] "GET /echo\?a=1 HTTP/1\.1" HIJACKED -1 \d+\.\d{4}$})
  end

  # rack.response_finished runs for a hijacked request too (frameworks complete their request
  # state there), with the status and headers the app returned and no error.
  def test_response_finished_runs_after_a_hijack
    server = hijack_server
    assert_equal "bye", hijacked_output(server.port, "/finished-hijack")
    assert_equal '[-1, {"x-told"=>"1"}, nil]', get(server.port, "/finished").body
  end

  # The bytes sent right behind the request head (already read by the server with it) reach
  # the app first; later bytes follow; the client sees only the app's bytes, no HTTP response
  # (the app's own [200, ...] is ignored), and the app's close ends the connection.
  def test_raw_socket_echo_reads_the_early_bytes_first
    server = hijack_server
    sock = hijack(server.port, extra: "EARLY ")
    assert_equal GREETING, read_line(sock)
    sock.write("later quit")
    assert_equal "EARLY later quit", read_until_close(sock)
  ensure
    sock&.close
  end

  # A pipelined request behind the hijacking one is the app's to read: Catamount never answers
  # it.
  def test_a_pipelined_request_behind_the_hijack_goes_to_the_app
    server = hijack_server
    assert_equal "#{GREETING}GET / HTTP/1.1\r\nHost: x\r\n\r\nquit",
                 hijacked_output(server.port, extra: "GET / HTTP/1.1\r\nHost: x\r\n\r\nquit")
  end

  # write_nonblock, wait_readable, read_nonblock (early bytes first) and to_io.close, called in
  # app.call itself.
  def test_non_blocking_calls_see_the_early_bytes_and_close_ends_the_connection
    server = hijack_server
    assert_equal "ready\ngot abc", hijacked_output(server.port, "/nonblock", extra: "abc")
  end

  def test_an_app_raising_after_the_hijack_gets_its_connection_closed
    server = hijack_server
    assert_equal "partial\n", hijacked_output(server.port, "/raise"), "no 500 is written on a hijacked connection"
    assert_equal "plain", get(server.port, "/").body
    server.wait_for(/the app fails after hijacking/, stream: :stderr)
  end

  def test_the_ignored_bodies_are_closed
    server = hijack_server
    assert_equal "#{GREETING}quit", hijacked_output(server.port, extra: "quit")
    assert_equal "ready\ngot x", hijacked_output(server.port, "/nonblock", extra: "x")
    # Closed once app.call returned, which may come a moment after the app's own close.
    closed = []
    assert wait_until { closed.concat(get(server.port, "/closed").body.split(",")).sort == %w[echo nonblock] },
           "closed: #{closed}"
  end

  # A kept-alive connection's second request (pipelined behind the first) can hijack too.
  def test_the_second_request_of_a_kept_alive_connection_hijacks
    server = hijack_server
    sock = connect(server.port)
    sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\nquit")
    assert_equal "plain", read_response(sock).body
    # What the response reader read past the first response (if anything) comes first.
    assert_equal "#{GREETING}quit", @pending.delete(sock).to_s + read_until_close(sock)
  ensure
    sock&.close
  end

  def test_early_hints_sent_before_the_hijack_come_first
    server = hijack_server("--early-hints")
    assert_equal "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nafter hints\n",
                 hijacked_output(server.port, "/hints")
  end

  def test_hijack_outside_its_app_call_raises_io_error
    server = hijack_server
    assert_equal "rack.hijack works only during app.call, on the thread running it",
                 get(server.port, "/hijack_outside").body
  end

  # One pool thread: a hijacked connection holds no thread, so plain requests are answered
  # while it stays open, and it still echoes afterwards.
  def test_a_hijacked_connection_holds_no_pool_thread
    server = hijack_server("-t", "1:1")
    sock = hijack(server.port)
    assert_equal GREETING, read_line(sock)
    3.times { assert_equal "plain", get(server.port, "/").body }
    sock.write("still here quit")
    assert_equal "still here quit", read_until_close(sock)
  ensure
    sock&.close
  end

  # 20 hijacked connections open at once on one pool thread; plain requests are answered
  # meanwhile; the hijacked ones are not counted as open connections nor as responses.
  def test_twenty_hijacked_connections_on_one_thread
    server = hijack_server("-t", "1:1")
    socks = 20.times.map do
      sock = hijack(server.port)
      assert_equal GREETING, read_line(sock)
      sock
    end
    3.times { assert_equal "plain", get(server.port, "/").body }
    # The /stats request's own connection is the only one open (the plain ones' may linger
    # a moment after their response).
    assert wait_until { stats(server.port)["connections_open"] == 1 }, "hijacked connections still counted"
    numbers = stats(server.port)
    assert_operator numbers["requests_count"], :>=, 24
    # The plain responses and the earlier /stats answers: never a hijacked request.
    assert_equal numbers["requests_count"] - 20 - 1, numbers["responses"].values.sum
    socks.each_with_index { |sock, i| sock.write("#{i} quit") }
    socks.each_with_index { |sock, i| assert_equal "#{i} quit", read_until_close(sock) }
  ensure
    socks&.each(&:close)
  end

  # A stop waits for a hijacked connection only while its app keeps it open (for at most the
  # drain time: test_drain.rb): once the app closes it, the process ends.
  def test_term_with_a_hijacked_connection_open_ends_when_the_app_closes_it
    Dir.mktmpdir do |dir|
      File.write(config = File.join(dir, "drain.rb"), "drain_timeout 120\n")
      server = hijack_server("-C", config, "-b", "tcp://127.0.0.1:0")
      sock = hijack(server.port)
      assert_equal GREETING, read_line(sock)
      server.signal("TERM")
      server.wait_for(/Waiting up to 120 s \(drain_timeout\) for 1 connection/)
      sock.write("quit")
      assert_equal "quit", read_until_close(sock)
      assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
    ensure
      sock&.close
    end
  end

  def test_a_unix_socket_connection_is_hijacked_as_a_unix_socket
    path = File.join(Dir.tmpdir, "cat-hijack-#{Process.pid}-#{rand(1 << 30)}.sock")
    hijack_server("-b", "unix://#{path}")
    sock = UNIXSocket.new(path)
    sock.write("GET /echo HTTP/1.1\r\nHost: x\r\n\r\nearly ")
    assert_equal "hello from UNIXSocket (true)\n", read_line(sock)
    sock.write("quit")
    assert_equal "early quit", read_until_close(sock)
  ensure
    sock&.close
  end
end
