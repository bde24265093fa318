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
    Catamount::Native::ControlServer.new(url, token, allowed, false).tap { |c| @controls << c }
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
    ["garbage\r\n\r\n", "GET /stats HTTP/1.1\r\nHost: x\r\nX: #{'a' * 9000}\r\n\r\n"].each do |raw|
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
    assert_raises(IOError) { c.poll }
    assert_raises(IOError) { c.fd }
    assert_nil c.timeout
    refute c.answer(1, 200, "text/plain", "x")
    assert_raises(Errno::ECONNREFUSED, Errno::ENOENT) { UNIXSocket.new(path) }
  end

  # Single mode's control thread waits in IO.select on the descriptor: `close` from another
  # thread wakes it, and its poll raises IOError, which ends its loop.
  def test_close_wakes_a_thread_waiting_on_the_fd
    c = control
    url = c.url
    io = IO.for_fd(c.fd, autoclose: false)
    waiting = Queue.new
    thread = Thread.new do
      loop do
        waiting << true
        IO.select([io], nil, nil, c.timeout)
        c.poll
      end
    rescue IOError
      :closed
    end
    waiting.pop
    c.close
    assert thread.join(BOUND), "the waiting thread was not woken"
    assert_equal :closed, thread.value
    host, port = url.delete_prefix("tcp://").split(":")
    assert_raises(Errno::ECONNREFUSED) { TCPSocket.new(host, Integer(port)) }
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
    error = assert_raises(Catamount::UsageError) { Catamount::Native::ControlServer.new(c.url, nil, ALL, false) }
    assert_equal "Control server address '#{c.url}' is already in use", error.message
    path = File.join(@dir, "live.sock")
    control("unix://#{path}")
    error = assert_raises(Catamount::UsageError) { Catamount::Native::ControlServer.new("unix://#{path}", nil, ALL, false) }
    assert_equal "Control server address 'unix://#{path}' is already in use", error.message
    error = assert_raises(Catamount::UsageError) { Catamount::Native::ControlServer.new("ssl://127.0.0.1:0", nil, ALL, false) }
    assert_match(/\AControl server address 'ssl:\/\/127\.0\.0\.1:0' cannot serve TLS: needs cert and key/, error.message)
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

  # Single mode: the main thread flushes (halt, exec) while the control thread still polls and
  # answers; the thread neither waits nor fails, and its answer goes out with the flush.
  def test_flush_while_another_thread_polls_and_answers
    c = control
    client_thread = client(c, get("/halt"))
    id, command = serve(c, answer: nil) { |s| !s.empty? }.first
    assert_equal "halt", command
    assert_nil c.timeout
    seen_during_flush = nil
    control_thread = Thread.new do
      # A timeout while nothing has a deadline: the other thread is flushing now.
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + BOUND
      Thread.pass while c.timeout.nil? && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      seen_during_flush = [c.timeout, c.poll]
      c.answer(id, 200, "application/json", '{ "status": "ok" }')
    end
    assert c.flush(BOUND), "flush waited for the handed-over request and sent its answer"
    assert control_thread.value, "the answer was taken"
    timeout, polled = seen_during_flush
    assert_kind_of Float, timeout
    assert_equal [], polled
    assert_equal '{ "status": "ok" }', body_of(client_thread.value)
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

  # -- Native.prometheus, checked with the real Python prometheus-client parser --

  VENV_PYTHON = File.join(Dir.home, ".cache", "catamount", "venv", "bin", "python3")
  PARSE = <<~PY
    import json, sys
    from prometheus_client.parser import text_string_to_metric_families
    families = [{"name": f.name, "type": f.type, "help": f.documentation,
                 "samples": [[s.name, s.labels, s.value] for s in f.samples]}
                for f in text_string_to_metric_families(sys.stdin.read())]
    print(json.dumps(families))
  PY
  BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0].freeze
  VERSIONS = { catamount: "0.1.0", ruby: { engine: "ruby", version: RUBY_VERSION, patchlevel: 0 } }.freeze

  # The families the real parser finds in `text`: {family name => {type:, help:, samples: [[name, labels, value]]}}.
  def parse_prometheus(text)
    assert File.executable?(VENV_PYTHON), "#{VENV_PYTHON} missing: script/bootstrap installs prometheus-client there"
    out = IO.popen([VENV_PYTHON, "-c", PARSE], "r+", err: %i[child out]) do |io|
      io.write(text)
      io.close_write
      io.read
    end
    assert $?.success?, "the parser refused the text:\n#{out}\n#{text}"
    JSON.parse(out, allow_nan: true).to_h { |f| [f["name"], f] }
  end

  def value(families, family, sample, labels = {})
    found = families.fetch(family) { flunk "no family #{family}" }["samples"].select { |n, l, _| n == sample && l == labels }
    assert_equal 1, found.size, "#{sample} #{labels}: #{found}"
    found.first.last
  end

  def server_stats(requests)
    { backlog: 1, running: 4, pool_capacity: 2, busy_threads: 3, io_threads: 1, backlog_max: 2, max_threads: 5,
      requests_count: requests, reactor_max: 3,
      responses: { "1xx": 0, "2xx": requests - 2, "3xx": 1, "4xx": 1, "5xx": 0 },
      request_duration: { bounds: BOUNDS, counts: [1, 2, 3, 5, 8, 13, 21, 30, 35, 38, 40, 41, 42, requests], sum: 12.5 },
      queue_time: { bounds: BOUNDS, counts: [requests] * 14, sum: 0.0125 },
      bytes_in: 1000, bytes_out: 5000, connections_open: 2, connections_accepted: 10,
      request_timeouts: 3, threads_lost: 1 }
  end

  def assert_server_series(families, stats, labels)
    { "catamount_requests" => ["catamount_requests_total", :requests_count],
      "catamount_threads_busy" => ["catamount_threads_busy", :busy_threads],
      "catamount_threads_io" => ["catamount_threads_io", :io_threads],
      "catamount_threads_running" => ["catamount_threads_running", :running],
      "catamount_threads_max" => ["catamount_threads_max", :max_threads],
      "catamount_pool_capacity" => ["catamount_pool_capacity", :pool_capacity],
      "catamount_backlog" => ["catamount_backlog", :backlog],
      "catamount_connections_open" => ["catamount_connections_open", :connections_open],
      "catamount_connections_accepted" => ["catamount_connections_accepted_total", :connections_accepted],
      "catamount_request_timeouts" => ["catamount_request_timeouts_total", :request_timeouts],
      "catamount_threads_lost" => ["catamount_threads_lost", :threads_lost],
      "catamount_received_bytes" => ["catamount_received_bytes_total", :bytes_in],
      "catamount_sent_bytes" => ["catamount_sent_bytes_total", :bytes_out] }.each do |family, (sample, key)|
      assert_equal stats[key], value(families, family, sample, labels), sample
    end
    stats[:responses].each do |klass, n|
      assert_equal n, value(families, "catamount_responses", "catamount_responses_total", labels.merge("status_class" => klass.to_s))
    end
    { "catamount_request_duration_seconds" => :request_duration,
      "catamount_request_queue_time_seconds" => :queue_time }.each do |family, key|
      h = stats[key]
      assert_equal "histogram", families[family]["type"]
      (BOUNDS + [Float::INFINITY]).each_with_index do |le, i|
        le_text = le.infinite? ? "+Inf" : families[family]["samples"].map { |_, l, _| l["le"] }.find { |t| t && Float(t) == le }
        assert_equal h[:counts][i], value(families, family, "#{family}_bucket", labels.merge("le" => le_text)), "#{family} le=#{le}"
      end
      assert_in_delta h[:sum], value(families, family, "#{family}_sum", labels)
      assert_equal h[:counts].last, value(families, family, "#{family}_count", labels)
    end
  end

  def test_prometheus_single_mode
    stats = { started_at: "2026-12-05T14:00:00Z" }.merge(server_stats(42)).merge(versions: VERSIONS)
    families = parse_prometheus(Catamount::Native.prometheus(stats, { Process.pid => [123_456, 65_432] }))
    assert_server_series(families, stats, {})
    assert_equal "counter", families["catamount_requests"]["type"]
    assert_equal "gauge", families["catamount_threads_busy"]["type"]
    assert_equal 123_456, value(families, "catamount_process_resident_memory_bytes", "catamount_process_resident_memory_bytes")
    assert_equal 65_432, value(families, "catamount_process_proportional_memory_bytes", "catamount_process_proportional_memory_bytes")
    families.each_value do |f|
      refute(f["samples"].any? { |_, l, _| l.key?("worker") || l.key?("role") }, f["name"])
      refute_empty f["help"], f["name"]
    end
    refute families.key?("catamount_workers")
  end

  def test_prometheus_cluster_mode
    checked_in = server_stats(7)
    # A check-in read back from the pipe's JSON has String keys: both kinds are read.
    from_json = JSON.parse(JSON.generate(server_stats(9)))
    stats = { started_at: "2026-12-05T14:00:00Z", workers: 3, phase: 2, booted_workers: 2, old_workers: 1,
              worker_status: [
                { started_at: "x", pid: 111, index: 0, phase: 2, booted: true, last_checkin: "y", last_status: checked_in },
                { started_at: "x", pid: 222, index: 1, phase: 1, booted: true, last_checkin: "y", last_status: from_json },
                { started_at: "x", pid: 333, index: 2, phase: 2, booted: false, last_checkin: "y", last_status: {} }
              ],
              versions: VERSIONS, worker_boots: 5, worker_restarts: 2 }
    memory = { Process.pid => [1000, nil], 111 => [2000, 1500], 333 => [3000, nil], 999_999 => [1, 1] }
    families = parse_prometheus(Catamount::Native.prometheus(stats, memory))
    assert_server_series(families, checked_in, { "worker" => "0" })
    assert_server_series(families, server_stats(9), { "worker" => "1" })
    refute(families.values.any? { |f| f["name"] != "catamount_worker_phase" && f["name"] != "catamount_worker_booted" &&
                                      !f["name"].include?("memory") && f["samples"].any? { |_, l, _| l["worker"] == "2" } },
           "a worker without a check-in has no per-server series")
    assert_equal 3, value(families, "catamount_workers", "catamount_workers")
    assert_equal 2, value(families, "catamount_workers_booted", "catamount_workers_booted")
    assert_equal 2, value(families, "catamount_phase", "catamount_phase")
    assert_equal 5, value(families, "catamount_worker_boots", "catamount_worker_boots_total")
    assert_equal 2, value(families, "catamount_worker_restarts", "catamount_worker_restarts_total")
    assert_equal 1, value(families, "catamount_worker_phase", "catamount_worker_phase", { "worker" => "1" })
    assert_equal 1, value(families, "catamount_worker_booted", "catamount_worker_booted", { "worker" => "0" })
    assert_equal 0, value(families, "catamount_worker_booted", "catamount_worker_booted", { "worker" => "2" })
    rss = "catamount_process_resident_memory_bytes"
    pss = "catamount_process_proportional_memory_bytes"
    assert_equal 1000, value(families, rss, rss, { "role" => "master" })
    assert_equal 2000, value(families, rss, rss, { "worker" => "0" })
    assert_equal 3000, value(families, rss, rss, { "worker" => "2" })
    assert_equal 1500, value(families, pss, pss, { "worker" => "0" })
    assert_equal 1, families[pss]["samples"].size, "PSS only where readable"
    assert_equal 3, families[rss]["samples"].size, "an unknown pid is left out"
  end

  def test_prometheus_content_type
    assert_equal "text/plain; version=0.0.4; charset=utf-8", Catamount::Native::PROMETHEUS_CONTENT_TYPE
  end

  def test_prometheus_tolerates_missing_and_odd_values
    assert_equal "", Catamount::Native.prometheus({}, {})
    odd = { worker_status: [1, nil, { index: "x" }, { index: 0, last_status: { responses: "x", request_duration: { bounds: [1.0], counts: [1] } } }],
            workers: "two", phase: -1 }
    text = Catamount::Native.prometheus(odd, { "pid" => [1, 2], 5 => "x", Process.pid => [nil, nil] })
    families = parse_prometheus(text)
    refute families.key?("catamount_workers")
    refute families.key?("catamount_request_duration_seconds")
    text = Catamount::Native.prometheus({ requests_count: 3.0, backlog: nil, responses: { "2xx" => 3 } }, {})
    families = parse_prometheus(text)
    assert_equal 3, value(families, "catamount_requests", "catamount_requests_total")
    assert_equal 3, value(families, "catamount_responses", "catamount_responses_total", { "status_class" => "2xx" })
    refute families.key?("catamount_backlog")
  end
end

