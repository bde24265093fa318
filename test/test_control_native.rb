# frozen_string_literal: true

require "helper"
require_relative "../lib/catamount/catamount"

# Catamount::Native::ControlServer driven as the launcher drives it: a Ruby loop waiting with
# IO.select on its epoll descriptor, calling poll and answering, with real clients (TCP and
# UNIX) on their own threads. And Native.control_token / process_memory.
class TestControlNative < Minitest::Test
  ALL = %w[stop halt restart phased-restart refork reload-worker-directory gc gc-stats stats
           thread-backtraces metrics].freeze
  BOUND = 20

  def setup
    @dir = Dir.mktmpdir("control-native")
    @controls = []
  end

  def teardown
    @controls.each(&:close)
    FileUtils.rm_rf(@dir)
  end

  def control(url = "tcp://127.0.0.1:0", token: nil, allowed: ALL)
    Catamount::Native::ControlServer.new(url, token, allowed).tap { |c| @controls << c }
  end

  def connect(control)
    url = control.url
    if url.start_with?("unix://")
      UNIXSocket.new(url.delete_prefix("unix://"))
    else
      host, port = url.delete_prefix("tcp://").split(":")
      TCPSocket.new(host, Integer(port))
    end
  end

  # A client thread: sends `raw`, reads until the server closes.
  def client(control, raw)
    sock = connect(control)
    Thread.new do
      sock.write(raw)
      sock.read
    ensure
      sock.close
    end
  end

  # Runs the loop until the block says stop (bounded): waits on the fd, polls, answers each
  # command through the `answer` callable.
  def serve(control, answer: ->(id, command) { control.answer(id, 200, "application/json", %({"command":"#{command}"})) })
    io = IO.for_fd(control.fd, autoclose: false)
    seen = []
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + BOUND
    until yield(seen)
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      flunk "the control loop did not finish within #{BOUND}s" if left <= 0
      IO.select([io], nil, nil, [control.timeout || 0.2, 0.2, left].min)
      control.poll.each do |id, command|
        seen << [id, command]
        answer&.call(id, command)
      end
    end
    seen
  end

  # One request's whole answer (the connection closed after it).
  def exchange(control, raw)
    thread = client(control, raw)
    serve(control) { !thread.alive? }
    thread.value
  end

  def get(path)
    "GET #{path} HTTP/1.1\r\nHost: x\r\n\r\n"
  end

  def body_of(response)
    response.split("\r\n\r\n", 2).last
  end

  def test_a_command_reaches_the_loop_and_its_answer_closes_the_connection
    c = control
    assert_match %r{\Atcp://127\.0\.0\.1:\d+\z}, c.url
    refute_equal "tcp://127.0.0.1:0", c.url
    thread = client(c, get("/a/b/stats"))
    seen = serve(c, answer: nil) { |s| !s.empty? }
    assert_equal 1, seen.size
    id, command = seen.first
    assert_equal "stats", command
    assert c.answer(id, 200, "application/json", '{"backlog":0}')
    refute c.answer(id, 200, "text/plain", "again")
    serve(c) { !thread.alive? }
    assert_equal "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n" \
                 "connection: close\r\n\r\n{\"backlog\":0}", thread.value
    assert_nil c.timeout
  end

  def test_every_known_command_is_routed_and_the_method_is_ignored
    c = control
    ALL.each do |command|
      assert_equal %({"command":"#{command}"}), body_of(exchange(c, "POST /#{command}?x=1 HTTP/1.0\r\n\r\n"))
    end
  end

  def test_403_without_the_token
    c = control(token: "abc123")
    ["/stats", "/stats?token=abc12", "/stats?token=abc1234", "/nope"].each do |path|
      r = exchange(c, get(path))
      assert r.start_with?("HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n"), "#{path}: #{r}"
      assert_equal "Invalid auth token", body_of(r)
    end
    assert_equal '{"command":"stats"}', body_of(exchange(c, get("/stats?a=1;token=abc123&b")))
  end

  def test_404_for_unknown_and_for_unavailable
    c = control(allowed: %w[stats gc-stats])
    r = exchange(c, get("/nothing"))
    assert r.start_with?("HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"), r
    assert_equal "Unsupported action", body_of(r)
    r = exchange(c, get("/halt"))
    assert r.start_with?("HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"), r
    assert_equal 'Command "halt" unavailable', body_of(r)
    assert_equal '{"command":"gc-stats"}', body_of(exchange(c, get("/gc-stats")))
  end

  def test_400_on_garbage_and_oversize
    c = control
    ["garbage\r\n\r\n", "GET /stats HTTP/1.1\r\n\r\n", "GET /stats HTTP/1.1\r\nHost: x\r\nX: #{'a' * 9000}\r\n\r\n"].each do |raw|
      r = exchange(c, raw)
      assert r.start_with?("HTTP/1.1 400 Bad Request\r\n"), r
      assert_includes r, "connection: close\r\n"
    end
  end

  def test_unix_socket_served_and_close_removes_the_file
    path = File.join(@dir, "control.sock")
    c = control("unix://#{path}", token: "t")
    assert_equal "unix://#{path}", c.url
    assert File.socket?(path)
    assert_equal '{"command":"gc"}', body_of(exchange(c, get("/gc?token=t")))
    c.close
    refute File.exist?(path)
    c.close # twice is harmless
    assert_equal [], c.poll
    assert_raises(IOError) { c.fd }
  end

  def test_auto_is_a_socket_in_the_temp_dir_named_after_the_pid
    c = control("auto")
    assert_match %r{\Aunix:///tmp/catamount-control-#{Process.pid}-\h+\.sock\z}, c.url if ENV["TMPDIR"].to_s.empty?
    path = c.url.delete_prefix("unix://")
    assert File.socket?(path)
    assert_equal '{"command":"stats"}', body_of(exchange(c, get("/stats")))
    c.close
    refute File.exist?(path)
  end

  def test_an_address_in_use_is_one_line_naming_it
    c = control
    error = assert_raises(Catamount::UsageError) { Catamount::Native::ControlServer.new(c.url, nil, ALL) }
    assert_equal "Control server address '#{c.url}' is already in use", error.message
    path = File.join(@dir, "live.sock")
    control("unix://#{path}")
    error = assert_raises(Catamount::UsageError) { Catamount::Native::ControlServer.new("unix://#{path}", nil, ALL) }
    assert_equal "Control server address 'unix://#{path}' is already in use", error.message
    error = assert_raises(Catamount::UsageError) { Catamount::Native::ControlServer.new("ssl://127.0.0.1:0", nil, ALL) }
    assert_match(/\AControl server address 'ssl:\/\/127\.0\.0\.1:0' .*TLS/, error.message)
  end

  def test_a_stale_socket_file_is_replaced
    path = File.join(@dir, "stale.sock")
    UNIXServer.new(path).close # the file stays, nothing listens
    c = control("unix://#{path}")
    assert_equal '{"command":"stats"}', body_of(exchange(c, get("/stats")))
  end

  def test_close_in_child_leaves_the_parent_serving
    path = File.join(@dir, "control.sock")
    c = control("unix://#{path}")
    closed_r, closed_w = IO.pipe
    go_r, go_w = IO.pipe
    pid = fork do
      c.close_in_child
      closed_w.write("closed")
      go_r.read(2)
      exit!(File.socket?(path) ? 0 : 1)
    end
    closed_w.close
    go_r.close
    assert_equal "closed", closed_r.read(6)
    assert_equal '{"command":"stats"}', body_of(exchange(c, get("/stats")))
    go_w.write("go")
    _, status = Process.wait2(pid)
    assert status.success?, "the child's close_in_child removed the file"
    assert File.socket?(path)
    assert_equal '{"command":"gc"}', body_of(exchange(c, get("/gc")))
  end

  def test_flush_sends_a_large_answer
    c = control
    thread = client(c, get("/thread-backtraces"))
    seen = serve(c, answer: nil) { |s| !s.empty? }
    body = "x" * (4 * 1024 * 1024)
    assert c.answer(seen.first.first, 200, "application/json", body)
    assert c.flush(BOUND)
    assert_equal body, body_of(thread.value)
  end

  def test_control_token
    a = Catamount::Native.control_token
    assert_match(/\A\h{32}\z/, a)
    assert_equal a.downcase, a
    refute_equal a, Catamount::Native.control_token
  end

  def test_process_memory
    rss, pss = Catamount::Native.process_memory(Process.pid)
    assert_operator rss, :>, 0
    assert_operator pss, :>, 0 unless pss.nil?
    pid = Process.spawn("true")
    Process.wait(pid)
    assert_nil Catamount::Native.process_memory(pid)
  end
end
