# frozen_string_literal: true

require "helper"

# The boundary between Ruby and the native server: a pool thread killed (or left by a `throw`)
# anywhere app code runs still answers its client, is replaced, and does not stop the server
# from stopping; a body that would block in the kernel blocks only its own request.
class TestNativeBoundary < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  KILLS = {
    "/kill/call" => 500, "/kill/each" => 500, "/kill/headers" => 500, "/kill/error" => 500,
    "/kill/close" => 200, "/kill/after_reply" => 200, "/throw/each" => 500,
    # The jump's state survives a `close` that rescues (it crashed Ruby when resumed).
    "/throw/each/rescuing_close" => 500, "/kill/each/rescuing_close" => 500
  }.freeze

  # With one thread, each request is served by the thread alive then: a new thread after a
  # kill shows the kill went on (was not swallowed) and the pool replaced the thread.
  KILLS.each do |path, status|
    name = path.delete_prefix("/").tr("/", "_")
    define_method("test_#{name}_answers_and_the_thread_is_replaced") do
      server = start_server("-t", "1:1", app: "boundary.ru")
      before = get(server.port, "/thread").body
      sock = connect(server.port)
      sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\n\r\n")
      r = read_response(sock)
      assert_equal status, r.status, "#{path}: #{r.body}"
      assert_equal "close", r["connection"] if status == 500
      after = get(server.port, "/thread").body
      refute_equal before, after, "#{path}: the thread that served it still serves"
      # The pool's books: one thread, busy with this request only.
      assert_equal "running 1 busy_threads 1 backlog 0", get(server.port, "/stats").body
      server.signal("TERM")
      refute_nil server.wait_exit.termsig
    end
  end

  # The lowlevel_error_handler is app code too: a kill in it is not swallowed either.
  def test_a_kill_in_the_lowlevel_error_handler_answers_and_the_thread_is_replaced
    dir = Dir.mktmpdir
    conf = File.join(dir, "puma.rb")
    File.write(conf, "threads 1, 1\nbind 'tcp://127.0.0.1:0'\nlowlevel_error_handler { |_e| Thread.current.kill }\n")
    server = start_server("-C", conf, app: "boundary.ru")
    before = get(server.port, "/thread").body
    r = get(server.port, "/raise")
    assert_equal 500, r.status
    refute_equal before, get(server.port, "/thread").body
    server.signal("TERM")
    refute_nil server.wait_exit.termsig
  ensure
    FileUtils.rm_rf(dir) if dir
  end

  # A kill right after `File.for_fd` made a large body's `rack.input`: the IO owns the
  # descriptor, which the server must not close too (it could be another connection's by then).
  def test_a_kill_after_for_fd_leaves_the_descriptor_to_the_io
    server = start_server("-t", "1:1", app: "boundary.ru")
    assert_equal "armed", get(server.port, "/for_fd/arm").body
    sock = connect(server.port)
    body = "x" * (200 * 1024)
    sock.write("POST /thread HTTP/1.1\r\nHost: x\r\nContent-Length: #{body.bytesize}\r\n\r\n#{body}")
    assert_equal 500, read_response(sock).status
    # Descriptors a double close would have freed are taken again by new connections.
    socks = Array.new(4) { connect(server.port) }
    assert_equal "same", get(server.port, "/for_fd/check").body
    socks.each(&:close)
    server.signal("TERM")
    refute_nil server.wait_exit.termsig
  end

  # A large Array body's Strings are read where they are, after Ruby compacted the heap.
  def test_an_array_body_is_sent_right_after_compaction_moves_its_strings
    server = start_server("-t", "1:1", app: "boundary.ru")
    expected = Array.new(2000) { |i| format("%07d\n", i) * 12 }.join
    # Which Strings move is up to the GC: a few rounds (an old build crashed in most).
    4.times do
      r = get(server.port, "/compacting_array")
      assert_equal 200, r.status
      assert_equal expected, r.body
    end
    server.signal("TERM")
    refute_nil server.wait_exit.termsig
  end

  # The access log's stdout is a pipe nobody reads once the server has booted: every request is
  # still answered (lines past the log queue's bound are dropped), and TERM still stops it.
  def test_a_log_reader_that_stops_reading_stalls_neither_requests_nor_the_stop
    out_r, out_w = IO.pipe
    args = ["-t", "2:2", "--log-requests", "-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "boundary.ru")]
    server = launch(args, redirects: { out: out_w })
    out_w.close
    booted = +""
    until booted.include?("Use Ctrl-C to stop")
      raise "no boot line: #{booted}" unless out_r.wait_readable(20)

      booted << out_r.readpartial(4096)
    end
    port = booted[%r{Listening on http://127\.0\.0\.1:(\d+)}, 1].to_i
    sock = connect(port)
    answered = 0
    3000.times do
      sock.write("GET /thread HTTP/1.1\r\nHost: x\r\n\r\n")
      r = read_response(sock)
      answered += 1 if r.status == 200
      sock = connect(port) if r["connection"] == "close" # max_keep_alive
    end
    assert_equal 3000, answered
    server.signal("TERM")
    refute_nil server.wait_exit.termsig
  ensure
    out_r&.close
  end

  # A streamed part yielded from another thread while one is being written is not dropped
  # from a response that then looks complete: the response is whole, or cut short.
  def test_a_part_yielded_from_another_thread_is_never_silently_lost
    server = start_server("-t", "1:1", app: "boundary.ru")
    3.times do
      sock = connect(server.port)
      sock.write("GET /two_threads HTTP/1.1\r\nHost: x\r\n\r\n")
      begin
        r = read_response(sock, timeout: 30)
      rescue EOFError, Errno::ECONNRESET
        next # aborted: the client sees a truncated response, never a wrong one
      end
      assert_equal 8_000_000 + 30_000, r.body.bytesize
    ensure
      sock&.close
    end
    server.signal("TERM")
    refute_nil server.wait_exit.termsig
  end

  # A FIFO path is not opened at all: opened non-blocking it released a writer waiting in its
  # own open, into a pipe the server then closed (EPIPE).
  # With stdout and stderr one pipe (2>&1), the server's lines come out in the order they were
  # logged, also when a batch of them waited for a reader.
  def test_error_and_access_lines_keep_their_order_in_one_pipe
    with_unread_log do |port, drain|
      # Lines fill the pipe (the writer then waits in write), then queue up.
      filler = "f" * 200
      keep_alive(port, Array.new(800) { "/thread?#{filler}" })
      marks = (1..4).flat_map { |n| ["/raise?n=#{n}", "/thread?n=#{n}"] }
      keep_alive(port, marks)
      text = drain.call("/thread?n=4 ")
      positions = marks.map { |mark| text.index(mark) }
      assert_equal positions.sort, positions, "lines out of order: #{marks.zip(positions)}"
    end
  end

  # The launcher's own lines go through the log queue too: a failing out_of_band hook, reported
  # after each request on the pool thread, once waited for the full pipe (holding the GVL).
  def test_a_hook_failing_with_the_log_unread_stalls_nothing
    dir = Dir.mktmpdir
    conf = File.join(dir, "puma.rb")
    File.write(conf, "out_of_band { raise 'out of band' }\n")
    with_unread_log("-C", conf) do |port, drain|
      keep_alive(port, Array.new(800) { "/thread?#{'f' * 200}" })
      assert_includes drain.call("WARNING hook out_of_band"), "(RuntimeError) out of band"
    end
  ensure
    FileUtils.rm_rf(dir) if dir
  end

  # A worker whose master died says so and ends with `exit!`: the line, queued for the log
  # writer thread, still gets out first.
  def test_a_worker_whose_master_died_logs_it_before_exit
    server = start_server("-w", "1", "-t", "1:1", app: "boundary.ru")
    server.wait_for(/Worker 0 \(PID: \d+\) booted/)
    assert_equal 200, get(server.port, "/thread").status
    server.signal("KILL")
    server.wait_for(/Detected the master died, stopping/, stream: :stderr)
  end

  # Past the queue's bound lines are dropped, and the count is reported once the pipe drains.
  def test_lines_past_the_bound_are_dropped_and_counted
    with_unread_log do |port, drain|
      # About 4 KiB a line: 400 of them are more than the 1 MiB the queue holds.
      keep_alive(port, Array.new(400) { |i| "/thread?#{i}#{'q' * 4000}" })
      note = drain.call("log line(s) dropped")[/(\d+) log line\(s\) dropped/, 1]
      assert_operator note.to_i, :>, 0
    end
  end

  def test_a_fifo_to_path_leaves_a_writer_blocked_in_open_alone
    dir = Dir.mktmpdir
    fifo = File.join(dir, "fifo")
    File.mkfifo(fifo)
    writer = Thread.new do
      Thread.current.report_on_exception = false
      File.open(fifo, "w") { |f| f.write("from the writer") }
    end
    Thread.pass until writer.status == "sleep" || !writer.alive?
    server = start_server("-t", "1:1", app: "boundary.ru")
    assert_equal "from each", get(server.port, "/fifo?path=#{fifo}").body
    # Released, the writer finishes (or fails with EPIPE) at once; left alone it waits for ever.
    assert_nil writer.join(2), "the writer waiting in open was released"
    File.open(fifo, File::RDONLY | File::NONBLOCK) do |r|
      writer.join(10)
      assert_equal "from the writer", r.read
    end
  ensure
    writer&.kill
    FileUtils.rm_rf(dir) if dir
  end

  # Starts a server whose stdout and stderr are one pipe left unread, and yields its port and a
  # function that reads the pipe until a text appears (returning all that was read).
  def with_unread_log(*extra)
    out_r, out_w = IO.pipe
    args = ["-t", "1:1", "--log-requests", "-b", "tcp://127.0.0.1:0", *extra, File.join(Support::APPS, "boundary.ru")]
    server = launch(args, redirects: { out: out_w, err: out_w })
    out_w.close
    text = +""
    drain = lambda do |until_text|
      until text.include?(until_text)
        raise "no #{until_text.inspect} in: #{text[-2000..] || text}" unless out_r.wait_readable(20)

        text << out_r.readpartial(65_536)
      end
      text
    end
    port = drain.call("Use Ctrl-C to stop")[%r{Listening on http://127\.0\.0\.1:(\d+)}, 1].to_i
    yield port, drain
    server.signal("TERM")
    refute_nil server.wait_exit.termsig
  ensure
    out_r&.close
  end

  # GETs each path in order on keep-alive connections (a new one after a close).
  def keep_alive(port, paths)
    sock = connect(port)
    paths.each do |path|
      sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\n\r\n")
      r = read_response(sock)
      sock = connect(port) if r["connection"] == "close"
    end
    sock.close
  end

  def test_a_fifo_to_path_does_not_stall_other_requests
    dir = Dir.mktmpdir
    fifo = File.join(dir, "fifo")
    File.mkfifo(fifo)
    server = start_server("-t", "2:2", app: "boundary.ru")
    stuck = connect(server.port)
    stuck.write("GET /fifo?path=#{fifo} HTTP/1.1\r\nHost: x\r\n\r\n")
    begin
      assert_equal 200, get(server.port, "/thread").status
      assert_equal "from each", read_response(stuck).body
    ensure
      # An old build waits in open(2) for a writer: give it one, so it can stop.
      File.open(fifo, File::WRONLY | File::NONBLOCK).close rescue Errno::ENXIO
      FileUtils.rm_rf(dir)
    end
  end
end
