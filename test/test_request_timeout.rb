# frozen_string_literal: true

require "helper"

# `request_timeout` (issue 23): a request still running at its deadline is answered by the
# server (503 by default, or its connection cut when the response had begun), its thread's
# backtrace is logged and Catamount::RequestTimeout is raised into it (its `ensure` runs, an
# app's `rescue => e` does not catch it); a thread still there past the grace is lost: counted
# in single mode, a cluster worker is replaced. Neighbours are never touched. App: timeout.ru.
class TestRequestTimeout < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def timeout_server(config, *args)
    start_with_config(config, *args, app: "timeout.ru")
  end

  def stats(server)
    JSON.parse(get(server.port, "/stats").body, symbolize_names: true)
  end

  # The status of the answer to `path` from the cluster worker with `pid`: the others are stopped
  # until it is answered, so only that one can take the connection (timeout.ru's `only` would
  # answer 409 from any other). One at a time: each call stops the others.
  def answer_from(server, pid, path)
    with_only_one_worker_running(live_worker_pids(server) - [pid]) do
      get(server.port, "#{path}#{path.include?('?') ? '&' : '?'}only=#{pid}").status
    end
  end

  # The master's stats (its control server's /stats), and its metrics text.
  def master_stats(server)
    port = server.stdout[%r{Starting control server on http://127\.0\.0\.1:(\d+)}, 1].to_i
    JSON.parse(raw_request(port, "GET /stats HTTP/1.0\r\n\r\n").body, symbolize_names: true)
  end

  def master_metrics(server)
    port = server.stdout[%r{Serving metrics on http://127\.0\.0\.1:(\d+)/metrics}, 1].to_i
    raw_request(port, "GET /metrics HTTP/1.0\r\n\r\n").body
  end

  # Each worker's `request_timeouts` as its last check-in told the master, by index, once it
  # equals `want` (bounded wait for the check-ins).
  def timeouts_by_worker(server, want)
    got = nil
    wait_until(timeout: 20) do
      got = master_stats(server)[:worker_status].to_h { |w| [w[:index], w[:last_status][:request_timeouts]] }
      got == want
    end
    got
  end

  def booted_pids(server, count)
    (0...count).map { |i| server.wait_for(/Worker #{i} \(PID: (\d+)\) booted/)[1].to_i }
  end

  def test_a_sleeping_request_is_answered_503_and_its_thread_unwinds
    server = timeout_server("request_timeout 1\nrequest_timeout_grace 30\n", "-t", "1:1")
    mark = File.join(scratch_dir, "sleep")
    response = get(server.port, "/sleep?s=60&mark=#{mark}")
    assert_equal 503, response.status
    assert_equal "Service Unavailable\n", response.body
    assert_equal "close", response.headers["connection"]
    # `ensure` ran with the timeout on its way; `rescue => e` did not see it.
    assert_equal "ensure Catamount::RequestTimeout", wait_for_file(mark)
    log = server.wait_for(/! Request timeout: GET \/sleep\?s=60&mark=\S+ still running after [\d.]+ s \(request_timeout 1(\.0)? s\); answered 503; raising Catamount::RequestTimeout into its thread\. Its backtrace:\n(  .*\n)+/, stream: :stderr)[0]
    assert_match(/timeout\.ru:\d+:in `sleep'/, log)
    # The one thread is back and serves: nothing else was logged for the request.
    assert_equal "quick\n", get(server.port, "/").body
    s = stats(server)
    assert_equal [1, 0], [s[:request_timeouts], s[:threads_lost]]
    assert_equal 1, s[:responses][:"5xx"]
    refute_match(/Error reached|RequestTimeout \(/, server.stderr)
  end

  # The watch's wait after a timeout: the timed-out request's grace (30 s here) is not when it
  # looks next, or a request taken meanwhile by another thread runs until then (found
  # 2026-12-06: with the default grace of 10 s, `-t 2:2` answered every other request late,
  # "still running after 9.99 s (request_timeout 1 s)").
  def test_a_request_taken_during_an_earlier_ones_grace_is_timed_out_at_its_own_deadline
    server = timeout_server("request_timeout 1\nrequest_timeout_grace 30\n", "-t", "2:2")
    2.times do |i|
      mark = File.join(scratch_dir, "sleep-#{i}")
      assert_equal 503, get(server.port, "/sleep?s=60&mark=#{mark}").status, "request #{i + 1}"
      assert_equal "ensure Catamount::RequestTimeout", wait_for_file(mark)
    end
    logged = -> { server.stderr.scan(/GET \/sleep\?s=60&mark=\S+ still running after ([\d.]+) s/).flatten.map(&:to_f) }
    assert wait_until { logged.call.size == 2 }, server.stderr # the log writer's thread writes a moment later
    elapsed = logged.call
    assert_operator elapsed.max, :<, 30, "each answered before the earlier one's grace ran out"
  end

  def test_a_busy_loop_is_interrupted_too
    server = timeout_server("request_timeout 1\n", "-t", "1:1")
    mark = File.join(scratch_dir, "busy")
    assert_equal 503, get(server.port, "/busy?mark=#{mark}").status
    assert_equal "ensure Catamount::RequestTimeout", wait_for_file(mark)
    assert_equal 200, get(server.port, "/").status
  end

  def test_the_status_is_configurable
    server = timeout_server("request_timeout 1\nrequest_timeout_status 504\n")
    response = get(server.port, "/sleep?s=60")
    assert_equal 504, response.status
    assert_equal "Gateway Timeout\n", response.body
  end

  def test_a_response_already_begun_is_cut
    server = timeout_server("request_timeout 1\n", "-t", "1:1")
    mark = File.join(scratch_dir, "stream")
    sock = connect(server.port)
    sock.write("GET /stream?mark=#{mark} HTTP/1.1\r\nHost: x\r\n\r\n")
    data = read_until_close(sock, timeout: 30)
    assert_match(/\AHTTP\/1\.1 200 /, data)
    assert_includes data, "first\n"
    refute_includes data, "0\r\n\r\n", "the body ends short: no last chunk"
    assert_equal "ensure Catamount::RequestTimeout", wait_for_file(mark)
    server.wait_for(/! Request timeout: GET \/stream\S* still running .*; its response had begun: connection closed;/, stream: :stderr)
    assert_equal 200, get(server.port, "/").status
  ensure
    sock&.close
  end

  # The neighbours run beside the stuck request on other threads, on fresh and kept-alive
  # connections, and all get their own answers.
  def test_neighbours_are_never_touched
    server = timeout_server("request_timeout 2\n", "-t", "3:3")
    stuck = connect(server.port)
    stuck.write("GET /sleep?s=60 HTTP/1.1\r\nHost: x\r\n\r\n")
    kept = connect(server.port)
    answers = []
    until stuck.wait_readable(0)
      kept.write("GET /sleep?s=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
      answers << read_response(kept).body
      answers << get(server.port, "/").body
    end
    assert_equal 503, read_response(stuck, timeout: 30).status
    assert_operator answers.size, :>=, 2
    assert_equal(answers.each_slice(2).map { ["slept\n", "quick\n"] }.flatten, answers)
    kept.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_equal "quick\n", read_response(kept).body, "the kept-alive neighbour is still open"
    assert_equal 1, stats(server)[:request_timeouts]
  ensure
    stuck&.close
    kept&.close
  end

  # A thread that defers every interrupt is lost after the grace: logged with where it is,
  # counted, the pool runs on with the others; when it leaves the request at last, it is back.
  def test_single_mode_counts_a_lost_thread
    server = timeout_server("request_timeout 1\nrequest_timeout_grace 1\n", "-t", "2:2",
                            "--metrics-url", "tcp://127.0.0.1:0")
    release = File.join(scratch_dir, "release")
    assert_equal 503, get(server.port, "/deaf?release=#{release}").status
    log = server.wait_for(/! Request timeout: GET \/deaf\S* still running after [\d.]+ s, 1(\.0)? s after Catamount::RequestTimeout was raised \(request_timeout_grace\): its thread counts as lost, the pool has one thread fewer\. Its backtrace:\n(  .*\n)+/, stream: :stderr)[0]
    assert_match(/timeout\.ru:\d+:in `handle_interrupt'/, log)
    s = stats(server)
    assert_equal [1, 1], [s[:request_timeouts], s[:threads_lost]]
    metrics = raw_request(server.stdout[%r{Serving metrics on http://127\.0\.0\.1:(\d+)/metrics}, 1].to_i,
                          "GET /metrics HTTP/1.0\r\n\r\n").body
    assert_match(/^catamount_request_timeouts_total 1$/, metrics)
    assert_match(/^catamount_threads_lost 1$/, metrics)
    File.write(release, "go")
    server.wait_for(/a lost thread left its request at last/, stream: :stderr)
    assert_equal 0, stats(server)[:threads_lost]
  end

  # A stop does not wait for a lost thread (Ruby's own exit would, for ever).
  def test_a_stop_ends_with_a_lost_thread
    server = timeout_server("request_timeout 1\nrequest_timeout_grace 0.5\n", "-t", "2:2")
    assert_equal 503, get(server.port, "/deaf?release=#{File.join(scratch_dir, 'never')}").status
    server.wait_for(/its thread counts as lost/, stream: :stderr)
    server.signal("TERM")
    server.wait_exit(timeout: 20)
    assert_match(/1 thread\(s\) lost to request_timeout still running: exiting without them/, server.stdout)
  end

  # The worker with a lost thread stops accepting, finishes its other request and exits; the
  # master starts a new one; nothing sent meanwhile is lost.
  def test_a_cluster_worker_with_a_lost_thread_is_replaced
    server = timeout_server("workers 1\nthreads 2, 2\nrequest_timeout 4\nrequest_timeout_grace 0.5\n")
    server.wait_for(/Worker 0 \(PID: (\d+)\) booted/)
    first_pid = server.stdout[/Worker 0 \(PID: (\d+)\) booted/, 1]
    assert_equal 503, get(server.port, "/deaf?release=#{File.join(scratch_dir, 'never')}").status
    # Its neighbour, running when the thread is lost.
    mark = File.join(scratch_dir, "neighbour")
    other = connect(server.port)
    other.write("GET /sleep?s=1&mark=#{mark} HTTP/1.1\r\nHost: x\r\n\r\n")
    server.wait_for(/Worker 0: a thread is lost to request_timeout; stopping/, stream: :stderr)
    response = read_response(other, timeout: 30)
    assert_equal [200, "slept\n"], [response.status, response.body]
    assert_equal "finished", File.read(mark)
    # Sent while the worker is replaced: queued in the listen backlog, answered by the new one.
    answers = Array.new(5) { Thread.new { get(server.port, "/").status } }.map(&:value)
    assert_equal [200] * 5, answers
    server.wait_for(/Worker 0 \(PID: (?!#{first_pid}\))\d+\) booted/, timeout: 30)
  ensure
    other&.close
    kill_named_workers(server) if server
  end

  # The app keeps the connections it took past the deadline: on its pool thread (a full hijack,
  # a 101 upgrade's callable) or on a thread of its own. A request that starts after them and
  # times out shows the watch has passed their deadlines; then each still answers its client's
  # next line. None is cut, counted or logged.
  def test_hijacked_and_upgraded_connections_are_exempt
    server = timeout_server("request_timeout 1\n", "-t", "4:4")
    taken = { "hijack" => "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n",
              "detached" => "GET /hijack?detach=1 HTTP/1.1\r\nHost: x\r\n\r\n",
              "upgrade" => "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n" }
    socks = taken.transform_values do |request|
      sock = connect(server.port)
      sock.write(request)
      sock
    end
    head = +""
    head << read_line(socks["upgrade"]) until head.end_with?("\r\n\r\n")
    assert_match(/\AHTTP\/1\.1 101 /, head)
    socks.each { |name, sock| assert_equal "taken\n", read_line(sock), name }
    assert_equal 503, get(server.port, "/sleep?s=60").status
    server.wait_for(/! Request timeout: GET \/sleep\?s=60 /, stream: :stderr)
    socks.each do |name, sock|
      sock.write("#{name}\n")
      assert_equal "echo #{name}\n", read_until_close(sock, timeout: 30), name
    end
    assert_equal 1, stats(server)[:request_timeouts]
    assert_equal 1, server.stderr.scan("Request timeout").size, server.stderr
  ensure
    socks&.each_value(&:close)
  end

  # Each worker counts its own; its check-ins carry the counts to the master's stats (per
  # worker: the cluster stats have no totals) and metrics (`worker` label).
  def test_cluster_workers_timeouts_reach_the_master_stats_and_metrics
    server = timeout_server("workers 2\nthreads 2, 2\nrequest_timeout 1\nworker_check_interval 1\n",
                            "--control-url", "tcp://127.0.0.1:0", "--control-token", "none",
                            "--metrics-url", "tcp://127.0.0.1:0")
    pids = booted_pids(server, 2)
    timed_out = { 0 => 1, 1 => 2 }.flat_map { |index, n| [pids[index]] * n }
    assert_equal([503] * 3, timed_out.map { |pid| answer_from(server, pid, "/sleep?s=60") })
    assert_equal({ 0 => 1, 1 => 2 }, timeouts_by_worker(server, { 0 => 1, 1 => 2 }))
    assert_equal([0, 0], master_stats(server)[:worker_status].map { |w| w[:last_status][:threads_lost] })
    metrics = master_metrics(server)
    assert_match(/^catamount_request_timeouts_total\{worker="0"\} 1$/, metrics)
    assert_match(/^catamount_request_timeouts_total\{worker="1"\} 2$/, metrics)
    assert_match(/^catamount_threads_lost\{worker="0"\} 0$/, metrics)
    assert_match(/^catamount_threads_lost\{worker="1"\} 0$/, metrics)
  ensure
    kill_named_workers(server) if server
  end

  # fork_worker: worker 0 serves between forks, each run of its server with a watch of its
  # own; a worker it forked starts its own (Ruby threads do not survive fork(2)) and its own
  # count. Timeouts work in both before and after a refork; a thread lost in worker 0 has it
  # replaced like any worker, the worker it forked serving on meanwhile, and the new worker 0
  # times requests out too.
  def test_fork_worker_times_out_in_worker_0_and_its_forks_and_replaces_a_worker_0_that_lost_a_thread
    server = timeout_server("workers 2\nthreads 2, 2\nfork_worker 0\nrequest_timeout 1\nrequest_timeout_grace 0.5\n" \
                            "worker_check_interval 1\n",
                            "--control-url", "tcp://127.0.0.1:0", "--control-token", "none")
    template, forked = booted_pids(server, 2)
    times_out = lambda do |pid|
      mark = File.join(scratch_dir, "mark-#{pid}-#{rand(1 << 30)}")
      assert_equal 503, answer_from(server, pid, "/sleep?s=60&mark=#{mark}")
      assert_equal "ensure Catamount::RequestTimeout", wait_for_file(mark), "the thread of #{pid} unwound"
    end
    [template, forked].each(&times_out)
    # A refork replaces worker 1 with a fork of worker 0 as it is now, its watch thread running.
    server.signal("URG")
    server.wait_for(/Refork complete/, timeout: 30)
    reforked = server.wait_for(/Worker 1 \(PID: (?!#{forked}\))(\d+)\) booted/)[1].to_i
    [template, reforked].each(&times_out)
    assert_equal({ 0 => 2, 1 => 1 }, timeouts_by_worker(server, { 0 => 2, 1 => 1 }), "a fork starts its own count")

    assert_equal 503, answer_from(server, template, "/deaf?release=#{File.join(scratch_dir, 'never')}")
    server.wait_for(/Worker 0: a thread is lost to request_timeout; stopping/, stream: :stderr)
    fresh = server.wait_for(/Worker 0 \(PID: (?!#{template}\))(\d+)\) booted/, timeout: 30)[1].to_i
    assert wait_until { !alive?(template) }, "the old worker 0 ended"
    assert alive?(reforked), "the worker it forked serves on"
    assert_equal 200, answer_from(server, reforked, "/")
    times_out.call(fresh)
  ensure
    kill_named_workers(server) if server
  end

  def test_bad_values_are_refused_with_the_line
    [["request_timeout 0", "request_timeout: must be more than 0 seconds"],
     ["request_timeout_status 200", "request_timeout_status: expected an Integer status from 400 to 599, got 200"],
     ["request_timeout_grace :x", "request_timeout_grace"]].each do |line, message|
      path = File.join(scratch_dir, "bad.rb")
      File.write(path, "\n#{line}\n")
      server = start_server("-C", path, "-b", "tcp://127.0.0.1:0", app: "timeout.ru", boot: false)
      server.wait_exit(timeout: 20)
      assert_includes server.stderr, "#{path}:2", line
      assert_includes server.stderr, message, line
    end
  end
end
