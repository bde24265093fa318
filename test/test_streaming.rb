# frozen_string_literal: true

require "helper"

# Bodies whose `each` yields slowly or without end (test/apps/streaming.ru): each part reaches
# the client as it is yielded, a slow reader of an endless body costs bounded memory and one
# thread, and a client that leaves stops the body.
class TestStreaming < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def setup
    super
    @dir = Dir.mktmpdir("catamount-streaming")
  end

  def teardown
    super
    FileUtils.rm_rf(@dir)
  end

  # Reads from `sock` into `buf` until the block is true of it (bounded).
  def read_until(sock, buf, timeout: 15)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    until yield(buf)
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      flunk "timed out; got #{buf.inspect[0, 400]}" if left <= 0 || !sock.wait_readable(left)
      buf << sock.readpartial(65_536)
    end
    buf
  end

  # The body of a chunked response, and whether its last chunk came.
  def dechunk(raw)
    body = +""
    rest = raw
    loop do
      size_line, rest = rest.split("\r\n", 2)
      return [body, false] unless rest

      size = size_line.to_i(16)
      return [body, rest.start_with?("\r\n")] if size.zero?

      body << rest.byteslice(0, size)
      rest = rest.byteslice(size + 2..)
    end
  end

  # A `-t 1:1` server, and a connection on which the SSE stream of `events` was asked for.
  def sse_stream(events)
    server = start_server("-t", "1:1", app: "streaming.ru")
    sock = connect(server.port)
    sock.write("GET /sse?dir=#{@dir}&n=#{events} HTTP/1.1\r\nHost: x\r\n\r\n")
    [server, sock]
  end

  def rss_kib(pid)
    File.read("/proc/#{pid}/status")[/^VmRSS:\s+(\d+) kB/, 1].to_i
  end

  def test_sse_events_arrive_one_by_one_as_they_are_yielded
    _server, sock = sse_stream(5)
    buf = +""
    1.upto(5) do |i|
      # The app yields event i + 1 only after the go-ahead below: event i must be readable now.
      read_until(sock, buf) { |b| b.include?("data: event #{i}\n\n") }
      refute_includes buf, "event #{i + 1}\n"
      File.write(File.join(@dir, "go#{i}"), "") if i < 5
    end
    read_until(sock, buf) { |b| b.end_with?("0\r\n\r\n") }
    head, raw = buf.split("\r\n\r\n", 2)
    assert_match %r{\AHTTP/1.1 200 OK\r\n}, head
    assert_match %r{^content-type: text/event-stream\r?$}i, head
    assert_match(/^transfer-encoding: chunked\r?$/i, head)
    body, ended = dechunk(raw)
    assert ended, "the last chunk ends the body"
    assert_equal (1..5).map { |i| "id: #{i}\ndata: event #{i}\n\n" }.join, body
    # The connection is kept: a second request on it is answered.
    sock.write("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_equal "hello", read_response(sock).body
  ensure
    sock&.close
  end

  # The app yields 16 KiB parts as fast as it can; the client reads a little at a time through a
  # small receive buffer. The pool thread must stop at the hand-over bound (16 MiB a connection)
  # and wait for its client, holding neither more memory nor the other thread.
  def test_an_endless_stream_read_slowly_costs_bounded_memory_and_one_thread
    server = start_server("-t", "2:2", app: "streaming.ru")
    assert_equal "hello", get(server.port, "/hello").body
    before = rss_kib(server.pid)
    sock = Socket.new(:INET, :STREAM)
    sock.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
    sock.connect(Socket.sockaddr_in(server.port, "127.0.0.1"))
    sock.write("GET /endless?dir=#{@dir} HTTP/1.1\r\nHost: x\r\n\r\n")
    read = 0
    bound = 16 * 1024 * 1024
    # Until the producer has gone past the bound (it then waits for this client).
    assert wait_until(timeout: 30) { get(server.port, "/yielded").body.to_i > bound }, "the app never produced 16 MiB"
    peak = before
    200.times do |i|
      sock.wait_readable(10) or flunk "the stream stalled"
      read += sock.readpartial(4096).bytesize
      next unless (i % 20).zero?

      peak = [peak, rss_kib(server.pid)].max
      # Another request is served meanwhile, by the other thread.
      assert_equal "hello", get(server.port, "/hello").body
    end
    yielded = get(server.port, "/yielded").body.to_i
    # What was produced and not read is the bound plus a piece, and the sockets' buffers.
    assert_operator yielded - read, :<, bound + 16 * 1024 * 1024, "yielded #{yielded}, read #{read}"
    assert_operator peak - before, :<, 96 * 1024, "RSS grew from #{before} KiB to #{peak} KiB"
    # The client leaves: the next write fails, `each` stops and `close` runs.
    sock.close
    assert_match(/\AErrno::/, wait_for_file(File.join(@dir, "stopped"), timeout: 30).to_s)
    assert wait_for_file(File.join(@dir, "closed"), timeout: 30), "body.close was not called"
    2.times { assert_equal "hello", get(server.port, "/hello").body }
    refute_match(/Rack app|ERROR/i, server.stderr)
  ensure
    sock&.close unless sock&.closed?
  end

  def test_a_client_leaving_mid_stream_frees_the_only_thread
    server, sock = sse_stream(1000)
    buf = +""
    read_until(sock, buf) { |b| b.include?("data: event 1\n\n") }
    sock.close
    # The app writes event 2 (to a closed connection) and goes on until a write fails.
    1.upto(999) { |i| File.write(File.join(@dir, "go#{i}"), "") }
    assert wait_for_file(File.join(@dir, "closed"), timeout: 30), "body.close was not called"
    assert_equal "hello", get(server.port, "/hello").body
  end

  # The lines the callables of streaming.ru's Finished wrote, once there are `count` (bounded).
  def finished_lines(count)
    path = File.join(@dir, "finished")
    assert wait_until(timeout: 15) { File.exist?(path) && File.readlines(path).size >= count }, File.exist?(path) ? File.read(path) : "none ran"
    File.readlines(path, chomp: true)
  end

  # Each callable's line: name, env is the request's, status, headers, error class.
  def callbacks(rest)
    %w[third second first].map { |name| "#{name} true #{rest}" }
  end

  def test_response_finished_runs_after_the_response_in_reverse_order_after_after_reply
    server = start_server("-t", "1:1", app: "streaming.ru")
    response = get(server.port, "/hello?dir=#{@dir}&finished=1")
    assert_equal "hello", response.body
    assert_equal ["after_reply", *callbacks('200 [["content-type", "text/plain"]] NilClass')], finished_lines(4)
    # The one that raised is logged, and did not stop the one registered before it.
    assert wait_until { server.stderr.include?("rack.response_finished callback failed: #<RuntimeError: second callback fails>") }, server.stderr
    assert_equal "hello", get(server.port, "/hello").body
  end

  def test_response_finished_gets_the_apps_exception_and_the_500_sent
    server = start_server("-t", "1:1", app: "streaming.ru")
    assert_equal 500, get(server.port, "/raise?dir=#{@dir}&finished=1").status
    # `rack.after_reply` runs first here too (as in Puma, whatever the app did).
    assert_equal ["after_reply", *callbacks("500 [] RuntimeError")], finished_lines(4)
  end

  def test_response_finished_gets_the_exception_that_ended_a_stream
    server = start_server("-t", "1:1", app: "streaming.ru")
    sock = connect(server.port)
    sock.write("GET /fail_mid_stream?dir=#{@dir}&finished=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_includes read_until_close(sock), "one part"
    assert_equal ["after_reply", *callbacks('200 [["x-kind", "failing"]] ArgumentError')], finished_lines(4)
  ensure
    sock&.close
  end

  def test_response_finished_gets_the_write_error_when_the_client_went_away
    server = start_server("-t", "1:1", app: "streaming.ru")
    sock = connect(server.port)
    sock.write("GET /endless?dir=#{@dir}&finished=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    read_until(sock, +"") { |b| b.bytesize > 100_000 }
    sock.close
    lines = finished_lines(4)
    assert_equal "after_reply", lines.first
    assert_equal %w[third second first], lines.drop(1).map { |l| l.split.first }
    lines.drop(1).each do |line|
      assert_match(/\A\w+ true 200 \[\["content-type", "application\/octet-stream"\]\] Errno::E[A-Z]+\z/, line)
    end
    assert_equal "hello", get(server.port, "/hello").body
  end
end
