# frozen_string_literal: true

require_relative "support/helper"
require "under_load"
require "systemd_notify"

# Restarts and worker-count changes under a steady load: hot restart (USR2), phased restart
# (USR1), TTIN/TTOU and a worker killed by SIGKILL. Each test counts every failed request of the
# load and asserts how many there may be (none, except the requests inside a killed worker).
class TestRestarts < Minitest::Test
  include Support::ServerTest
  include Support::SystemdNotify
  include Support::UnderLoad
  parallelize_me!

  def test_single_mode_hot_restart_serves_new_code_on_the_same_sockets_and_loses_nothing
    # A second listener, on a UNIX socket, must survive the restart too.
    serve("-t", "2:2", "--pidfile", "pid", "-b", "unix://DIR/app.sock") do |server, dir|
      sock_path = "#{dir}/app.sock"
      new_code_under_load(server, dir, "v2", "USR2")
      assert_match(/\* Restarting\.\.\..*Listening on http:\/\/127\.0\.0\.1:#{server.port} \(inherited\)/m, server.stdout)
      assert_match(%r{Listening on unix://#{Regexp.escape(sock_path)} \(inherited\)}, server.stdout)
      refute server.exited?, "the process replaced itself (same PID), it did not end"
      assert_equal server.pid, File.read("#{dir}/pid").to_i
      assert_match(/\Av2 #{server.pid}\z/, unix_get(sock_path), "the UNIX socket answers after the restart")
      assert_equal 2, server.stdout.scan("Catamount starting").size, "booted exactly twice"
      server.signal("TERM")
      server.wait_exit
      refute File.exist?(sock_path), "a plain stop removes the socket file"
      refute File.exist?("#{dir}/pid")
    end
  end

  def unix_get(path)
    sock = UNIXSocket.new(path)
    sock.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raise "no answer" unless sock.wait_readable(10)

    sock.read.split("\r\n\r\n", 2).last
  ensure
    sock&.close
  end

  def test_a_request_sent_on_an_accepted_connection_while_the_server_stops_is_answered
    serve("-t", "2:2") do |server, dir|
      late = connect(server.port)
      late.write("GET / HTTP/1.1\r\nHost: x\r\n") # half a head
      # Connections are accepted in the order they came: once the app has this one's request,
      # `late` was accepted too.
      slow = Thread.new { raw_request(server.port, "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") }
      assert wait_for_file("#{dir}/slow-started"), "the app has the slow request"
      server.signal("TERM")
      server.wait_for(/Gracefully stopping/)
      sleep 0.1 # the stop is under way (logged just before it begins); the /slow request holds it open
      late.write("Connection: close\r\n\r\n")
      response = read_response(late)
      assert_equal 200, response.status
      assert_equal "close", response["connection"]
      assert_equal 200, slow.value.status
      assert_equal Signal.list["TERM"], server.wait_exit.termsig
    ensure
      late&.close
    end
  end

  def test_cluster_hot_restart_with_preload_loses_nothing
    serve("-w", "2", "-t", "2:2") do |server, dir|
      master = server.pid
      new_code_under_load(server, dir, "v2", "USR2")
      server.wait_for(/Worker 1 \(PID: \d+\) booted.*Worker 1 \(PID: \d+\) booted/m)
      new_code_under_load(server, dir, "v3", "USR2")
      assert_equal 3, server.stdout.scan("Catamount starting in cluster mode").size
      assert_equal 2, server.stdout.scan("(inherited)").size
      assert_equal master, server.pid
      refute server.exited?
    end
  end

  def test_phased_restart_replaces_workers_one_at_a_time_with_new_code_and_loses_nothing
    serve("-w", "2", "-t", "2:2", config: "preload_app! false") do |server, dir|
      server.wait_for(/Worker 0 \(PID: \d+\) booted.*Worker 1 \(PID: \d+\) booted|Worker 1 \(PID: \d+\) booted.*Worker 0 \(PID: \d+\) booted/m)
      old = server.stdout.scan(/Worker \d \(PID: (\d+)\) booted/).flatten.map(&:to_i)
      assert_equal 2, old.size
      phased_restart_under_load(server, dir, "v2")
      log = server.stdout
      assert_match(/Starting phased worker restart, phase: 1/, log)
      # One at a time: the second old worker is stopped only after the first one's
      # replacement booted.
      assert_match(/Stopping \d+ for phased upgrade.*booted in [\d.]+s, phase: 1.*Stopping \d+ for phased upgrade.*booted in [\d.]+s, phase: 1/m, log)
      assert wait_until { old.none? { |pid| alive?(pid) } }, "the old workers are gone"
      # Every answer after the restart comes from new code.
      assert_only_version_served(server, "v2")
      refute_match(/Catamount starting.*Catamount starting/m, log, "the master was not replaced")
    end
  end

  def test_ttin_and_ttou_change_the_worker_count_culling_the_youngest_and_lose_nothing
    serve("-w", "2", "-t", "2:2") do |server, _dir|
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      load = under_load(server.port,
                        event: -> { server.signal("TTIN") },
                        done: ->(_) { server.stdout.match?(/Worker 2 \(PID: \d+\) booted/) })
      assert_empty load.failures, load.summary
      third = server.stdout[/Worker 2 \(PID: (\d+)\) booted/, 1].to_i
      assert alive?(third)

      load = under_load(server.port,
                        event: -> { server.signal("TTOU") },
                        done: ->(_) { !alive?(third) })
      assert_empty load.failures, load.summary
      assert_match(/Worker 2 \(PID: #{third}\) terminating: worker count lowered/, server.stdout)

      # Never fewer than one worker.
      3.times { server.signal("TTOU") }
      assert server.wait_for(/Worker count now 1/)
      assert wait_until { server.stdout.scan(/terminating: worker count lowered/).size == 2 }
      assert_equal 1, server.stdout.scan("Worker count now 1").size
      refute server.exited?
      assert_equal 200, raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status
    end
  end

  def test_worker_culling_strategy_oldest_culls_the_first_booted
    serve("-w", "2", config: "worker_culling_strategy :oldest") do |server, _dir|
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      server.signal("TTIN")
      server.wait_for(/Worker 2 \(PID: \d+\) booted/)
      server.signal("TTOU")
      culled = server.wait_for(/Worker (\d) \(PID: \d+\) terminating/)[1]
      refute_equal "2", culled
    end
  end

  def test_a_worker_killed_with_sigkill_fails_only_requests_inside_it
    serve("-w", "2", "-t", "2:2") do |server, _dir|
      victim = server.wait_for(/Worker 0 \(PID: (\d+)\) booted/)[1].to_i
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      kill_worker_0_under_load(server, victim)
    end
  end

  def test_term_during_a_hot_restart_stops_for_good
    serve("-w", "2", "-t", "2:2") do |server, dir|
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      slow = Thread.new { raw_request(server.port, "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") }
      assert wait_for_file("#{dir}/slow-started"), "the app has the request"
      server.signal("USR2")
      server.wait_for(/Restarting/)
      server.signal("TERM")
      status = server.wait_exit(timeout: 20)
      assert_equal 200, slow.value.status, "the request in flight finished"
      assert_equal Signal.list["TERM"], status.termsig
      assert_equal 1, server.stdout.scan("Catamount starting").size, "nothing was exec'd"
      assert_raises(Errno::ECONNREFUSED) { TCPSocket.new("127.0.0.1", server.port).close }
    end
  end

  def test_usr2_during_a_phased_restart_takes_over_and_usr1_during_a_hot_restart_is_ignored
    serve("-w", "2", config: "preload_app! false") do |server, _dir|
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      server.signal("USR1")
      server.wait_for(/Starting phased worker restart/)
      server.signal("USR2")
      server.signal("USR1")
      server.wait_for(/\(inherited\).*Worker 1 \(PID: \d+\) booted/m)
      assert_equal 2, server.stdout.scan("Catamount starting").size, "one hot restart, not two"
      assert_equal 200, raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status
    end
  end

  def test_systemd_socket_activation
    listener = TCPServer.new("127.0.0.1", 0)
    port = listener.addr[1]
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", app_source("v1"))
      # LISTEN_PID must be the server's own pid: the shell sets it and execs into the server.
      command = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', RbConfig.ruby, ServerProcess::BIN]
      server = launch(["--bind-to-activated-sockets=only", "app.ru"], command: command, chdir: dir,
                                                                      redirects: { 3 => listener }, boot: true)
      listener.close
      assert_match(/Listening on http:\/\/127\.0\.0\.1:#{port} \(inherited\)/, server.stdout)
      assert_equal 1, server.stdout.scan("Listening on").size, "only the activated socket"
      assert_match(/\Av1 /, raw_request(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body)
    end
  ensure
    listener&.close unless listener&.closed?
  end

  def test_only_listening_sockets_are_adopted
    listening = TCPServer.new("127.0.0.1", 0)
    bound_only = Socket.new(:INET, :STREAM)
    bound_only.bind(Addrinfo.tcp("127.0.0.1", 0))
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", app_source("v1"))
      command = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" "$@"', RbConfig.ruby, ServerProcess::BIN]
      server = launch(["--bind-to-activated-sockets=only", "app.ru"], command: command, chdir: dir,
                                                                      redirects: { 3 => listening, 4 => bound_only }, boot: true)
      assert_equal ["http://127.0.0.1:#{listening.addr[1]}"], server.stdout.scan(%r{Listening on (\S+)}).flatten
    end
  ensure
    [listening, bound_only].each { |s| s&.close unless s&.closed? }
  end

  def test_an_activated_socket_matching_a_bind_is_used_for_it_and_others_are_closed
    used = TCPServer.new("127.0.0.1", 0)
    spare = TCPServer.new("127.0.0.1", 0)
    port = used.addr[1]
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", app_source("v1"))
      command = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" "$@"', RbConfig.ruby, ServerProcess::BIN]
      server = launch(["-b", "tcp://127.0.0.1:#{port}", "app.ru"], command: command, chdir: dir,
                                                                 redirects: { 3 => used, 4 => spare }, boot: true)
      spare_port = spare.addr[1]
      [used, spare].each(&:close)
      assert_match(/Listening on http:\/\/127\.0\.0\.1:#{port} \(inherited\)/, server.stdout)
      assert_equal 200, raw_request(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status
      assert_raises(Errno::ECONNREFUSED) { TCPSocket.new("127.0.0.1", spare_port).close }
    end
  ensure
    [used, spare].each { |s| s&.close unless s&.closed? }
  end

  def test_tmp_restart_plugin_restarts_a_cluster_when_tmp_restart_txt_is_touched
    serve("-w", "2", config: "plugin :tmp_restart") do |server, dir|
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      # The plugin creates the file if missing (tmp/ must exist, as in Puma).
      FileUtils.mkdir_p("#{dir}/tmp")
      server.signal("USR2")
      server.wait_for(/\(inherited\)/)
      assert wait_until { File.exist?("#{dir}/tmp/restart.txt") }, "tmp/restart.txt created"
      File.write("#{dir}/app.ru", app_source("v2"))
      later = Time.now + 5
      File.utime(later, later, "#{dir}/tmp/restart.txt")
      server.wait_for(/Restarting: tmp\/restart\.txt was touched.*\(inherited\).*Worker 1 \(PID: \d+\) booted/m, timeout: 20)
      assert wait_until { raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body.start_with?("v2 ") }
      assert_equal 3, server.stdout.scan("Catamount starting").size, "one restart per touch"
    end
  end

  def test_systemd_notifications_ready_status_watchdog_reloading_stopping
    Dir.mktmpdir do |sockdir|
      notify = Socket.new(:UNIX, :DGRAM)
      notify.bind(Socket.sockaddr_un("#{sockdir}/notify"))
      env = { "NOTIFY_SOCKET" => "#{sockdir}/notify", "WATCHDOG_USEC" => "400000" }
      serve("-w", "2", "-t", "2:2", config: "worker_check_interval 1", env: env) do |server, _dir|
        server.wait_for(/Enabling systemd notification integration/)
        server.wait_for(/Pinging systemd watchdog every 0\.2 sec/)
        notification(notify, /\AREADY=1\z/)
        # Each worker's pool, from its stats ping (once both pools have started their threads).
        notification(notify, %r{\ASTATUS=Catamount [\d.]+: cluster: 2/2, worker_status: \[(\{ 2/2 threads, 2 available, 0 backlog \}(, )?){2}\]\z})
        notification(notify, /\AWATCHDOG=1\z/)
        server.signal("USR2")
        notification(notify, /\ARELOADING=1\z/)
        notification(notify, /\AREADY=1\z/)
        server.signal("TERM")
        notification(notify, /\ASTOPPING=1\z/)
        server.wait_exit
      end
    ensure
      notify&.close
    end
  end

  def test_systemd_status_in_single_mode_and_pwr_prints_backtraces
    Dir.mktmpdir do |sockdir|
      notify = Socket.new(:UNIX, :DGRAM)
      notify.bind(Socket.sockaddr_un("#{sockdir}/notify"))
      serve("-t", "3:3", env: { "NOTIFY_SOCKET" => "#{sockdir}/notify" }) do |server, _dir|
        notification(notify, /\AREADY=1\z/)
        assert_match(%r{\ASTATUS=Catamount [\d.]+: worker: \{ 3/3 threads, 3 available, 0 backlog \}\z},
                     notification(notify, /STATUS/))
        server.signal("PWR")
        # The main thread's backtrace shows it waiting in the launcher's loop.
        server.wait_for(/^Thread #<Thread:0x\h+ sleep_forever>\n(?:  .*\n)*?  .*in `serve'/, stream: :stderr)
        assert_equal 200, raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status
      end
    ensure
      notify&.close
    end
  end

  def test_prune_bundler_runs_the_master_outside_bundler_and_workers_load_the_bundle
    Dir.mktmpdir do |dir|
      File.write("#{dir}/Gemfile", "gem \"rack\"\n")
      lock = IO.popen(["timeout", "60", "bundle", "lock", "--local"], chdir: dir, err: %i[child out], &:read)
      assert File.exist?("#{dir}/Gemfile.lock"), "bundle lock --local: #{lock}"
      File.write("#{dir}/app.ru", <<~RUBY)
        # Pruned, the worker (forked from the master) starts without Bundler; the app sets it up.
        before = defined?(Bundler) ? "loaded" : "absent"
        require "bundler/setup"
        run ->(env) { [200, {}, ["bundler \#{before}, then \#{defined?(Bundler) ? 'loaded' : 'absent'}"]] }
      RUBY
      server = launch(["-w", "2", "--prune-bundler", "-b", "tcp://127.0.0.1:0", "app.ru"],
                      command: ["bundle", "exec", RbConfig.ruby, ServerProcess::BIN],
                      env: { "BUNDLE_GEMFILE" => "#{dir}/Gemfile", "PUMA_DEBUG" => "1" }, chdir: dir, boot: true)
      assert_match(/\* Pruning Bundler environment.*Catamount starting in cluster mode.*Preload: no/m, server.stdout)
      assert_equal 1, server.stdout.scan("Catamount starting").size
      master_env = File.read("/proc/#{server.pid}/environ").split("\0")
      assert_includes master_env, "PUMA_BUNDLER_PRUNED=1"
      # Catamount's own executable runs it (a binstub would load Bundler again).
      assert_includes server.stdout, " #{File.expand_path('../exe/catamount', __dir__)} -w 2 --prune-bundler"
      assert_includes master_env, "BUNDLE_GEMFILE=#{dir}/Gemfile", "the workers find the same bundle"
      refute master_env.any? { |v| v.start_with?("RUBYOPT=") && v.include?("bundler/setup") }, master_env.grep(/RUBYOPT/).inspect
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      assert_equal "bundler absent, then loaded", raw_request(server.port, request).body

      # A pruned master restarts into a pruned master (it keeps its load path).
      server.signal("USR2")
      assert wait_until(timeout: 30) { server.stdout.scan(/Worker 1 \(PID: \d+\) booted/).size == 2 }, server.stdout
      assert_match(/Listening on .* \(inherited\)/, server.stdout)
      assert_equal 2, server.stdout.scan("Catamount starting").size
      assert_equal 1, server.stdout.scan("Pruning Bundler environment").size
      assert_equal "bundler absent, then loaded", raw_request(server.port, request).body
    ensure
      kill_named_workers(server)
    end
  end
end
