# frozen_string_literal: true

require_relative "support/helper"

# The control server (activate_control_app / --control-url) in single and cluster mode, over TCP
# and UNIX sockets, with and without a token: every endpoint, Puma's answers, the state file,
# and that a bad control client never disturbs serving.
class TestControl < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  Answer = Struct.new(:status, :headers, :body) do
    def json
      JSON.parse(body)
    end
  end

  # One request to the control server at `url` (`http://` or `unix://`), read until it closes.
  def control(url, path, raw: nil)
    sock = if url.start_with?("unix://")
             UNIXSocket.new(url.delete_prefix("unix://"))
           else
             host, port = url[%r{//(.*)}, 1].split(":")
             TCPSocket.new(host, port.to_i)
           end
    sock.write(raw || "GET #{path} HTTP/1.0\r\n\r\n")
    text = read_until_close(sock)
    head, body = text.split("\r\n\r\n", 2)
    status_line, *fields = head.split("\r\n")
    headers = fields.to_h { |f| k, v = f.split(":", 2); [k.downcase, v.strip] }
    Answer.new(status_line.split(" ", 3)[1].to_i, headers, body.to_s)
  ensure
    sock&.close
  end

  def title(pid)
    File.read("/proc/#{pid}/cmdline").delete("\0").strip
  rescue SystemCallError
    ""
  end

  def control_url(server)
    server.stdout[/Starting control server on (\S+)/, 1]
  end

  def token(server)
    server.stdout[/Control server token: (\h+)/, 1]
  end

  def test_single_mode_tcp_every_endpoint_with_a_generated_token
    server = start_server("-t", "2:2", "--control-url", "tcp://127.0.0.1:0")
    url = control_url(server)
    assert_match %r{\Ahttp://127\.0\.0\.1:\d+\z}, url
    tok = token(server)
    assert_equal 32, tok&.size, "a token is made and printed when none is given:\n#{server.stdout}"

    # The token rules.
    bad = control(url, "/stats")
    assert_equal [403, "text/plain", "Invalid auth token"], [bad.status, bad.headers["content-type"], bad.body]
    assert_equal 403, control(url, "/stats?token=#{tok.reverse}").status
    assert_equal 403, control(url, "/stats?token=#{tok}x").status
    assert_equal 200, control(url, "/stats?a=1&token=#{tok}").status
    assert_equal 200, control(url, "/stats?a=1;token=#{tok}").status
    assert_equal 200, control(url, nil, raw: "GET /stats?token=#{tok} HTTP/1.1\r\n\r\n").status, "no Host, as nc health checks send"

    stats = control(url, "/anything/stats?token=#{tok}")
    assert_equal "application/json", stats.headers["content-type"]
    assert_equal stats.body.bytesize, stats.headers["content-length"].to_i
    %w[started_at backlog running pool_capacity max_threads requests_count].each { |k| assert stats.json.key?(k), k }
    assert_equal 2, stats.json["max_threads"]

    assert_equal [200, '{ "status": "ok" }'], control(url, "/gc?token=#{tok}").then { |a| [a.status, a.body] }
    assert_kind_of Integer, control(url, "/gc-stats?token=#{tok}").json["count"]
    threads = control(url, "/thread-backtraces?token=#{tok}").json
    assert threads.all? { |t| t["name"].start_with?("Thread: TID-") && t["backtrace"].is_a?(Array) }, threads.inspect
    assert_equal [404, '{ "error": "refork not available" }'], control(url, "/refork?token=#{tok}").then { |a| [a.status, a.body] }
    assert_equal [404, '{ "error": "reload_worker_directory not available" }'],
                 control(url, "/reload-worker-directory?token=#{tok}").then { |a| [a.status, a.body] }
    unknown = control(url, "/nope?token=#{tok}")
    assert_equal [404, "Unsupported action"], [unknown.status, unknown.body]

    # Garbage and oversize heads are refused; serving goes on.
    assert_equal 400, control(url, nil, raw: "\x16\x03\x01garbage\r\n\r\n").status
    assert_equal 400, control(url, nil, raw: "GET /stats?token=#{tok} HTTP/1.1\r\nX: #{'a' * 20_000}\r\n\r\n").status
    assert_equal 200, get(server.port, "/").status

    assert_equal 200, control(url, "/stop?token=#{tok}").status
    server.wait_for(/Goodbye!/)
    assert_equal 0, server.wait_exit.exitstatus
  end

  def test_single_mode_unix_no_token_data_only_and_the_state_file
    Dir.mktmpdir do |dir|
      File.write("#{dir}/puma.rb", <<~RUBY)
        activate_control_app "unix://#{dir}/ctl.sock", no_token: true, data_only: true
        state_path "#{dir}/state"
      RUBY
      server = start_server("-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0")
      url = control_url(server)
      assert_equal "unix://#{dir}/ctl.sock", url
      assert_nil token(server)
      state = File.read("#{dir}/state")
      assert_match(/\A---\npid: #{server.pid}\ncontrol_url: unix:\/\/#{Regexp.escape(dir)}\/ctl.sock\nrunning_from: /, state)
      refute_match(/control_auth_token/, state)
      assert_equal 200, control(url, "/stats").status
      assert_equal 200, control(url, "/gc-stats").status
      stop = control(url, "/stop")
      assert_equal [404, 'Command "stop" unavailable'], [stop.status, stop.body]
      assert_equal 404, control(url, "/gc").status
      server.signal("TERM")
      server.wait_exit
      refute File.exist?("#{dir}/ctl.sock"), "the control socket file goes with the server"
    end
  end

  # Puma's flags override one setting each: a URL on the command line keeps the file's token
  # and data_only.
  def test_control_url_flag_keeps_the_files_token_and_data_only
    Dir.mktmpdir do |dir|
      File.write("#{dir}/puma.rb", %(activate_control_app "unix://#{dir}/c.sock", auth_token: "ft", data_only: true\n))
      server = start_server("-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", "--control-url", "tcp://127.0.0.1:0")
      url = control_url(server)
      assert_match %r{\Ahttp://}, url, "the flag's URL"
      assert_nil token(server)
      assert_equal 403, control(url, "/stats").status
      assert_equal 200, control(url, "/stats?token=ft").status
      assert_equal 404, control(url, "/stop?token=ft").status, "data_only kept"
    end
  end

  def test_auto_url_and_a_given_token_reach_the_state_file
    Dir.mktmpdir do |dir|
      server = start_server("--control-url", "auto", "--control-token", "sekrit", "-S", "#{dir}/state")
      url = control_url(server)
      assert_match %r{\Aunix:///.*\.sock\z}, url
      assert_nil token(server), "a given token is not printed"
      state = File.read("#{dir}/state")
      assert_includes state, "control_url: #{url}\n"
      assert_includes state, "control_auth_token: sekrit\n"
      assert_equal 0o600, File.stat("#{dir}/state").mode & 0o777, "a token is the owner's alone"
      assert_equal 403, control(url, "/stats").status
      assert_equal 200, control(url, "/stats?token=sekrit").status
      assert_equal 200, control(url, "/halt?token=sekrit").status
      server.wait_for(/Stopping immediately/)
      server.wait_exit
      refute File.exist?(url.delete_prefix("unix://")), "auto's socket file is not left behind"
    end
  end

  def test_single_mode_restart_and_phased_restart_restart_hot_with_the_control_server_back
    Dir.mktmpdir do |dir|
      server = start_server("--control-url", "unix://#{dir}/ctl.sock", "--control-token", "t")
      url = control_url(server)
      assert_equal 200, control(url, "/restart?token=t").status
      server.wait_for(/Catamount starting.*Catamount starting.*Use Ctrl-C to stop/m)
      assert_equal 200, wait_for_control(url, "/stats?token=t").status
      assert_equal 200, control(url, "/phased-restart?token=t").status
      server.wait_for(/phased-restart called but not available, restarting normally/)
      server.wait_for(/(Catamount starting.*){3}Use Ctrl-C to stop/m)
      refute server.exited?, "the same process, exec'd"
      assert_equal 200, wait_for_control(url, "/stop?token=t").status
      server.wait_exit
    end
  end

  # The control server answers after a hot restart's exec (bounded retries while it rebinds).
  def wait_for_control(url, path)
    answer = nil
    wait_until(timeout: 15) do
      answer = control(url, path)
    rescue SystemCallError
      false
    end
    answer
  end

  def test_stats_answer_while_every_thread_is_busy
    Dir.mktmpdir do |dir|
      server = start_server("-t", "1:1", "--control-url", "tcp://127.0.0.1:0", "--control-token", "none")
      url = control_url(server)
      held = Thread.new { get(server.port, "/hold?marker=#{dir}/m&release=#{dir}/r") }
      assert wait_for_file("#{dir}/m"), "the request is in the app"
      stats = control(url, "/stats").json
      assert_equal 0, stats["pool_capacity"], stats.inspect
      # A client that sends half a request holds nothing.
      silent = TCPSocket.new("127.0.0.1", url[/:(\d+)\z/, 1].to_i)
      silent.write("GET /st")
      assert_equal 200, control(url, "/gc-stats").status
      File.write("#{dir}/r", "")
      assert_equal 200, held.value.status
    ensure
      silent&.close
    end
  end

  def test_a_control_url_in_use_stops_the_boot_naming_it
    taken = TCPServer.new("127.0.0.1", 0)
    url = "tcp://127.0.0.1:#{taken.addr[1]}"
    server = start_server("--control-url", url, boot: false)
    assert_equal 1, server.wait_exit.exitstatus
    assert_match(/#{Regexp.escape(url)}/, server.stderr)
    assert_equal 1, server.stderr.lines.size, server.stderr
  ensure
    taken&.close
  end

  def test_cluster_endpoints_from_the_master
    Dir.mktmpdir do |dir|
      File.write("#{dir}/puma.rb", "worker_check_interval 1\n")
      server = start_server("-C", "#{dir}/puma.rb", "-w", "2", "-t", "1:1", "-b", "tcp://127.0.0.1:0",
                            "--control-url", "unix://#{dir}/ctl.sock", "--control-token", "t", chdir: dir)
      url = control_url(server)
      stats = nil
      assert wait_until(timeout: 20) { (stats = control(url, "/stats?token=t").json)["booted_workers"] == 2 }, stats.inspect
      assert_equal %w[started_at workers phase booted_workers old_workers worker_status], stats.keys.first(6)
      assert_equal [0, 1], stats["worker_status"].map { |w| w["index"] }
      refute_empty control(url, "/thread-backtraces?token=t").json, "the master's threads"
      assert_equal 404, control(url, "/refork?token=t").status, "refork needs fork_worker"
      assert_equal 200, control(url, "/reload-worker-directory?token=t").status
      server.wait_for(/\+ Changing to/)
      old = stats["worker_status"].map { |w| w["pid"] }
      assert_equal 200, control(url, "/phased-restart?token=t").status
      server.wait_for(/Phased restart complete, phase: 1/, timeout: 40)
      assert wait_until(timeout: 20) { (stats = control(url, "/stats?token=t").json)["phase"] == 1 && stats["booted_workers"] == 2 }
      assert_empty old & stats["worker_status"].map { |w| w["pid"] }, "every worker replaced"
      # `ps` tells the processes apart; the master's title follows the phase.
      tag = File.basename(dir)
      assert wait_until { title(server.pid) =~ %r{\Acatamount \S+ master \(http://127\.0\.0\.1:\d+\) phase 1, 2/2 workers booted \[#{tag}\]\z} },
             title(server.pid)
      worker = stats["worker_status"].find { |w| w["index"] == 1 }["pid"]
      assert_equal "catamount: cluster worker 1: #{server.pid} phase 1 [#{tag}]", title(worker)
      worker0 = stats["worker_status"].find { |w| w["index"].zero? }["pid"]
      assert_equal "catamount: cluster worker 0: #{server.pid} phase 1 [#{tag}]", title(worker0), "a fresh worker 0"
      assert_equal 200, get(server.port, "/").status
      assert_equal 200, control(url, "/stop?token=t").status
      server.wait_for(/Goodbye!/, timeout: 30)
      assert_equal 0, server.wait_exit.exitstatus
      refute File.exist?("#{dir}/ctl.sock")
    ensure
      kill_named_workers(server)
    end
  end

  def test_cluster_refork_gc_and_hot_restart_over_tcp_with_a_token
    Dir.mktmpdir do |dir|
      server = start_server("-w", "2", "-t", "1:1", "--fork-worker", "--control-url", "tcp://127.0.0.1:0",
                            "--control-token", "t", "-S", "#{dir}/state")
      url = control_url(server)
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      assert_equal 403, control(url, "/refork").status
      assert_equal 200, control(url, "/refork?token=t").status
      server.wait_for(/Refork complete, phase: 1/, timeout: 40)
      reforked = server.stdout[/Worker 1 \(PID: (\d+)\) booted in \S+, phase: 1/, 1].to_i
      assert_match(/\Acatamount: cluster worker 1: #{server.pid} phase 1 \[/, title(reforked), "forked by worker 0")
      assert_match(/\Acatamount: cluster worker 0: #{server.pid} phase 0 \[/, title(server.stdout[/Worker 0 \(PID: (\d+)\)/, 1].to_i))
      assert_equal [200, '{ "status": "ok" }'], control(url, "/gc?token=t").then { |a| [a.status, a.body] }
      assert_kind_of Integer, control(url, "/gc-stats?token=t").json["count"]
      assert_equal 200, control(url, "/restart?token=t").status
      server.wait_for(/(Catamount starting.*){2}Use Ctrl-C to stop/m, timeout: 30)
      assert_equal 200, get(server.port, "/").status
      # The new run's control server, as the rewritten state file says.
      url = "http://#{File.read("#{dir}/state")[%r{control_url: tcp://(\S+)}, 1]}"
      assert_equal 200, wait_for_control(url, "/stats?token=t").status
      assert_equal server.pid, File.read("#{dir}/state")[/pid: (\d+)/, 1].to_i
      assert_equal 200, control(url, "/stop?token=t").status
      assert_equal 0, server.wait_exit(timeout: 30).exitstatus
    ensure
      kill_named_workers(server)
    end
  end

  # The cluster's stats move with load: each worker's check-in carries its busy threads.
  def test_cluster_stats_show_busy_workers_while_requests_sleep
    Dir.mktmpdir do |dir|
      File.write("#{dir}/puma.rb", "worker_check_interval 1\n")
      server = start_server("-C", "#{dir}/puma.rb", "-w", "2", "-t", "1:1", "-b", "tcp://127.0.0.1:0",
                            "--control-url", "tcp://127.0.0.1:0", "--control-token", "none")
      url = control_url(server)
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      held = Array.new(2) { |i| Thread.new { get(server.port, "/hold?marker=#{dir}/m#{i}&release=#{dir}/r") } }
      assert wait_until { File.exist?("#{dir}/m0") && File.exist?("#{dir}/m1") }, "both requests in the app"
      busy = nil
      assert wait_until(timeout: 15) {
        busy = control(url, "/stats").json["worker_status"].sum { |w| w["last_status"]["busy_threads"].to_i }
        busy >= 2
      }, "busy threads seen by the master: #{busy}"
      File.write("#{dir}/r", "")
      assert_equal [200, 200], held.map { |t| t.value.status }
      assert wait_until(timeout: 15) {
        stats = control(url, "/stats").json
        stats["worker_status"].sum { |w| w["last_status"]["busy_threads"].to_i }.zero? &&
          stats["worker_status"].sum { |w| w["last_status"]["requests_count"].to_i } == 2
      }, "idle again, two requests counted"
    ensure
      kill_named_workers(server)
    end
  end

  def test_cluster_halt_ends_the_master_and_its_workers
    server = start_server("-w", "2", "-t", "1:1", "--control-url", "tcp://127.0.0.1:0", "--control-token", "none")
    url = control_url(server)
    server.wait_for(/Worker 1 \(PID: (\d+)\) booted/)
    pids = server.stdout.scan(/Worker \d \(PID: (\d+)\) booted/).flatten.map(&:to_i)
    assert_equal 200, control(url, "/halt").status
    server.wait_exit
    assert wait_until(timeout: 15) { pids.none? { |pid| alive?(pid) } }, "the workers end with the master"
  ensure
    kill_named_workers(server)
  end
end
