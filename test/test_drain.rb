# frozen_string_literal: true

require "helper"

# The drain on a graceful stop (single mode; cluster mode in test_drain_cluster.rb): streaming
# responses and connections the app took (full hijack, 101 upgrades) go on for `drain_timeout`
# after the stop, then are closed, each logged; a request whose app is still making its response
# is never cut. App: drain.ru.
class TestDrain < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def drain_server(seconds)
    dir = Dir.mktmpdir("catamount-drain")
    (@dirs ||= []) << dir
    config = File.join(dir, "drain.rb")
    File.write(config, "drain_timeout #{seconds}\n")
    start_server("-C", config, "-b", "tcp://127.0.0.1:0", app: "drain.ru")
  end

  def teardown
    super
    (@dirs || []).each { |d| FileUtils.rm_rf(d) }
  end

  def read_line(sock, timeout: 10)
    line = +""
    until line.end_with?("\n")
      raise "timed out reading a line (got #{line.inspect})" unless sock.wait_readable(timeout)

      line << sock.readpartial(1)
    end
    line
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
    go = File.join(@dirs.last, "go")
    slow = connect(server.port)
    slow.write("GET /wait?#{go} HTTP/1.1\r\nHost: x\r\n\r\n")
    events = streaming(server.port)
    hijack = hijacked(server.port)
    server.signal("TERM")
    read_until_close(events, timeout: 30)
    assert_equal "", read_until_close(hijack, timeout: 30)
    server.wait_for(/closing the response still being written to 127\.0\.0\.1 \(GET \/events\)/)
    server.wait_for(%r{closing the connection taken by GET /hijack})

    File.write(go, "go")
    response = read_until_close(slow, timeout: 30)
    assert_match %r{\AHTTP/1.1 200 OK\r\n.*connection: close\r\n\r\nwaited\z}m, response
    assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
  ensure
    [slow, events, hijack].each { |s| s&.close }
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
    dir = Dir.mktmpdir("catamount-drain")
    (@dirs ||= []) << dir
    config = File.join(dir, "drain.rb")
    File.write(config, "workers 2\ndrain_timeout 45\nworker_shutdown_timeout 30\n")
    server = start_server("-C", config, "-b", "tcp://127.0.0.1:0", app: "drain.ru")
    assert_match(/^\[\d+\] ! WARNING: drain_timeout \(45 s\) is not shorter than worker_shutdown_timeout \(30 s\): a stopping worker is killed before its drain time is over$/,
                 server.stdout)
  end
end
