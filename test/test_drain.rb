# frozen_string_literal: true

require "helper"

# The drain on a graceful stop (single mode; cluster mode in test_drain_cluster.rb): streaming
# responses and connections the app took (full hijack, 101 upgrades) go on for `drain_timeout`
# after the stop, then are closed, each logged; a request whose app is still making its response
# is never cut. App: drain.ru.
class TestDrain < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def drain_server(seconds, more_config = "")
    dir = Dir.mktmpdir("catamount-drain")
    (@dirs ||= []) << dir
    config = File.join(dir, "drain.rb")
    File.write(config, "drain_timeout #{seconds}\n#{more_config}")
    start_server("-C", config, "-b", "tcp://127.0.0.1:0", app: "drain.ru")
  end

  # Sends a request to `route` (/wait or /big), whose app answers only once the returned
  # go-ahead file exists.
  def waiting_request(server, route)
    go = File.join(@dirs.last, "go-#{route}")
    sock = connect(server.port)
    sock.write("GET /#{route}?#{go} HTTP/1.1\r\nHost: x\r\n\r\n")
    [sock, go]
  end

  # TERM with an event stream open: the stream is cut (at once with `drain_timeout 0`), logged.
  def stop_cutting_a_stream(server)
    events = streaming(server.port)
    server.signal("TERM")
    read_until_close(events, timeout: 30)
    server.wait_for(/closing the response still being written to 127\.0\.0\.1 \(GET \/events\)/)
  ensure
    events&.close
  end

  def teardown
    super
    (@dirs || []).each { |d| FileUtils.rm_rf(d) }
  end

  # A full hijack: the app's thread greets, then echoes lines.
  def hijacked(port)
    sock = connect(port)
    sock.write("GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_match(/\Ahello \d+\n\z/, read_line(sock))
    sock
  end

  # A 101 upgrade: the head, then the callable greets and echoes lines on the pool thread.
  def upgraded(port)
    sock = connect(port)
    sock.write("GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
    head = +""
    head << read_line(sock) until head.end_with?("\r\n\r\n")
    assert_match %r{\AHTTP/1.1 101 }, head
    assert_match(/\Ahello \d+\n\z/, read_line(sock))
    sock
  end

  # An endless event stream, its head and first event read.
  def streaming(port)
    sock = connect(port)
    sock.write("GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    next_event(sock)
    sock
  end

  # Reads until one more event arrived (a chunk holding "data: ").
  def next_event(sock, timeout: 10)
    seen = +""
    until seen.include?("data: ")
      raise "timed out waiting for an event (got #{seen.inspect})" unless sock.wait_readable(timeout)

      seen << sock.readpartial(4096)
    end
    seen
  end

  def echoes(sock, word)
    sock.write("#{word}\n")
    read_line(sock) == "#{word}\n"
  end

  # After TERM the listeners close at once, but the three long-lived connections keep working
  # (echo, events) until the drain time is over; then each is closed by the server and named in
  # the log, and the process ends as a TERM stop does.
  def test_term_lets_taken_and_streaming_connections_go_on_until_the_drain_time_ends
    server = drain_server(5)
    hijack = hijacked(server.port)
    upgrade = upgraded(server.port)
    events = streaming(server.port)
    assert_equal "gc", get(server.port, "/gc").body, "a GC must not make the drain forget them"
    server.signal("TERM")
    server.wait_for(/Gracefully stopping/)
    wait_until_refused(server.port)

    assert echoes(hijack, "still there"), "the hijacked connection was dropped at the stop"
    assert echoes(upgrade, "still here"), "the upgraded connection was dropped at the stop"
    assert_includes next_event(events), "data: "
    server.wait_for(/Waiting up to 5 s \(drain_timeout\) for 2 connections taken by the app/)

    # Then the server closes each (the clients see the end of the stream, nothing sent).
    assert_equal "", read_until_close(hijack, timeout: 30)
    assert_equal "", read_until_close(upgrade, timeout: 30)
    read_until_close(events, timeout: 30)
    assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
    log = server.stdout
    assert_match %r{^- Drain time \(5 s\) over: closing the connection taken by GET /hijack from 127\.0\.0\.1, open [\d.]+ s$}, log
    assert_match %r{^- Drain time \(5 s\) over: closing the connection taken by GET /upgrade from 127\.0\.0\.1, open [\d.]+ s$}, log
    assert_match %r{^- Drain time \(5 s\) over: closing the response still being written to 127\.0\.0\.1 \(GET /events\)$}, log
    assert_operator log.index("Drain time"), :<, log.index("Goodbye")
    assert_equal "", server.stderr
  ensure
    [hijack, upgrade, events].each { |s| s&.close }
  end

  # Nothing is waited for longer than needed: once the app closed its connections and the
  # client left the stream, the stop completes, long before a drain time of 120 s.
  def test_the_stop_ends_as_soon_as_the_long_lived_connections_have_ended
    server = drain_server(120)
    hijack = hijacked(server.port)
    upgrade = upgraded(server.port)
    events = streaming(server.port)
    server.signal("TERM")
    server.wait_for(/Waiting up to 120 s/)
    assert echoes(hijack, "quit")
    assert echoes(upgrade, "quit")
    events.close
    assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
    refute_match(/Drain time/, server.stdout)
  ensure
    [hijack, upgrade, events].each { |s| s&.close unless s&.closed? }
  end

  # `drain_timeout 0`: the long-lived connections are closed as the stop begins; a request whose
  # app has not answered yet is not one of them: it is answered in full when the app is done.
  def test_a_response_not_begun_is_never_cut_and_zero_closes_the_others_at_once
    server = drain_server(0)
    slow, go = waiting_request(server, "wait")
    hijack = hijacked(server.port)
    stop_cutting_a_stream(server)
    assert_equal "", read_until_close(hijack, timeout: 30)
    server.wait_for(%r{closing the connection taken by GET /hijack})

    File.write(go, "go")
    response = read_until_close(slow, timeout: 30)
    assert_match %r{\AHTTP/1.1 200 OK\r\n.*connection: close\r\n\r\nwaited\z}m, response
    assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
  ensure
    [slow, hijack].each { |s| s&.close }
  end

  # A response of known length is not a stream: the drain never cuts it, even one whose app
  # answers after the drain time is over (20 MB, more than any socket buffer holds).
  def test_a_response_of_known_length_is_never_cut
    server = drain_server(0)
    sock, go = waiting_request(server, "big")
    stop_cutting_a_stream(server)
    File.write(go, "go")
    response = read_until_close(sock, timeout: 60)
    head, body = response.split("\r\n\r\n", 2)
    assert_match(/content-length: 20000000/, head)
    assert_equal 20_000_000, body.bytesize
    assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
  ensure
    sock&.close
  end

  # A stream whose client stopped reading (its write waiting when TERM came) is cut at the end
  # of the drain time, not left to `write_timeout` (30 s).
  def test_a_stalled_stream_is_cut_at_the_end_of_the_drain_time
    server = drain_server(2)
    sock = connect(server.port)
    sock.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
    sock.write("GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.wait_readable(10)
    sock.readpartial(4096) # the stream began; nothing more is read
    server.signal("TERM")
    server.wait_for(/closing the response still being written to 127\.0\.0\.1 \(GET \/flood\)/, timeout: 20)
    assert_equal Signal.list["TERM"], server.wait_exit(timeout: 20).termsig
  ensure
    sock&.close
  end

  # The loop still acts on signals while only the drain is left: a second INT, or
  # `force_shutdown_after`, ends the process at once, long before a drain time of 120 s.
  def test_a_second_int_or_the_force_limit_ends_a_drain
    [["INT", ""], ["TERM", "force_shutdown_after 1\n"]].each do |signal, extra|
      server = drain_server(120, extra)
      sock = hijacked(server.port)
      server.signal(signal)
      server.wait_for(/Waiting up to 120 s/)
      server.signal("INT") if signal == "INT"
      server.wait_exit(timeout: 20)
      assert_match(/Stopping immediately!/, server.stdout)
      sock.close
    end
  end

  # A hot restart (USR2) does not drain: it would hold up every new client while nothing
  # accepts. The hijacked connection is closed at once, logged as such, and the restarted
  # process serves, long before a drain time of 120 s.
  def test_a_hot_restart_does_not_drain
    server = drain_server(120)
    hijack = hijacked(server.port)
    first = get(server.port, "/").body
    server.signal("USR2")
    assert_equal "", read_until_close(hijack, timeout: 30)
    server.wait_for(%r{^- Restarting \(no drain\): closing the connection taken by GET /hijack from 127\.0\.0\.1, open [\d.]+ s$})
    server.wait_for(/\(inherited\)/, timeout: 30)
    assert_equal first, get(server.port, "/").body, "the same pid after exec"
    refute_match(/Waiting up to/, server.stdout)
  ensure
    hijack&.close
  end

  # A drain time too long to be a Duration (any seconds option) means forever, not a crash at
  # boot; with nothing long-lived open the stop is immediate.
  def test_a_huge_drain_time_boots_and_stops
    server = drain_server("1e30")
    assert_equal "plain #{server.pid}", get(server.port, "/").body
    server.signal("TERM")
    assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
    assert_equal "", server.stderr
  end

  # A cluster whose workers would be killed (worker_shutdown_timeout) before their drain time
  # is over says so at boot.
  def test_a_drain_time_past_the_worker_shutdown_timeout_is_warned_about
    server = drain_server(45, "workers 2\nworker_shutdown_timeout 30\n")
    assert_match(/^\[\d+\] ! WARNING: drain_timeout \(45 s\) is not shorter than worker_shutdown_timeout \(30 s\): a stopping worker is killed before its drain time is over$/,
                 server.stdout)
  end
end
