# frozen_string_literal: true

require_relative "support/helper"
require_relative "support/certificates"

# catamountctl (bin/catamountctl) against a real server: the pid path (a pid from -p, a pidfile
# (-P or the config file's), or the state file the server writes (-S)), the control server's
# path (TCP, TLS, UNIX, an abstract name; with and without a token), and `start`. Debian's own
# pumactl 5.6.5 runs the same commands against Catamount (existing scripts keep working), and
# both print the same words and exit the same way when something is wrong.
class TestCtl < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  CTL = File.join(Support::ROOT, "bin", "catamountctl")
  PUMACTL = "/usr/bin/pumactl"
  COMMANDS = { catamountctl: [RbConfig.ruby, CTL], pumactl: [PUMACTL] }.freeze

  # Runs a ctl (bounded); returns [stdout, stderr, exit status].
  def ctl(which, *args, chdir: nil, timeout: 30)
    out_r, out_w = IO.pipe
    err_r, err_w = IO.pipe
    pid = Process.spawn(*COMMANDS.fetch(which), *args.map(&:to_s), out: out_w, err: err_w, in: File::NULL,
                                                                  chdir: chdir || Support::APPS)
    [out_w, err_w].each(&:close)
    readers = [out_r, err_r].map { |io| Thread.new { io.read.tap { io.close } } }
    status = nil
    finished = wait_until(timeout: timeout) { (status = Process.wait2(pid, Process::WNOHANG)&.last) }
    unless finished
      kill_quietly(pid)
      Process.wait(pid)
      flunk "#{which} #{args.join(' ')} did not end within #{timeout} s"
    end
    [readers[0].value, readers[1].value, status.exitstatus]
  end

  # Asserts that `which` printed `out` (on stdout, nothing on stderr) and exited `status`.
  def assert_ctl(out, status, which, *args, **options)
    got = ctl(which, *args, **options)
    assert_equal [out, "", status], got, "#{which} #{args.join(' ')}"
  end

  # A pid no process has (a child that ended and was reaped).
  def dead_pid
    pid = Process.spawn("true")
    Process.wait(pid)
    pid
  end

  # A server (kitchen.ru on 127.0.0.1) with a pidfile and a state file in `dir`.
  def single_server(dir, *args, **options)
    start_server("-b", "tcp://127.0.0.1:0", "--pidfile", "#{dir}/pid", "-S", "#{dir}/state", *args, **options)
  end

  def test_status_and_pid_only_limits_through_every_pid_source_for_both_ctls
    Dir.mktmpdir do |dir|
      server = single_server(dir)
      assert_match(/^pid: #{server.pid}$/, File.read("#{dir}/state"))
      COMMANDS.each_key do |which|
        [["-P", "#{dir}/pid"], ["-p", server.pid], ["-S", "#{dir}/state"]].each do |source|
          assert_ctl "Puma is started\n", 0, which, *source, "status"
          # Said even with -Q, and exit 0, as pumactl does.
          assert_ctl "'stats' not available via pid only\n", 0, which, "-Q", *source, "stats"
        end
      end
      assert_equal 200, get(server.port, "/").status
      refute server.exited?
    end
  end

  def test_info_prints_every_threads_backtrace
    Dir.mktmpdir do |dir|
      server = single_server(dir)
      assert_ctl "Command info sent success\n", 0, :catamountctl, "-P", "#{dir}/pid", "info"
      server.wait_for(/Thread #<Thread:.*run>/, stream: :stderr)
      refute server.exited?
      # pumactl 5.6.5 sends INFO only, which Linux does not have.
      assert_ctl "Signal 'SIGINFO' not available'\n", 1, :pumactl, "-P", "#{dir}/pid", "info"
    end
  end

  COMMANDS.each_key do |which|
    define_method("test_stop_by_pidfile_then_status_says_not_running_with_#{which}") do
      Dir.mktmpdir do |dir|
        server = single_server(dir)
        assert_ctl "Command stop sent success\n", 0, which, "-P", "#{dir}/pid", "stop"
        assert_equal Signal.list["TERM"], server.wait_exit.termsig
        server.wait_for(/Goodbye!/)
        assert_ctl "Puma is not running\n", 1, which, "-p", server.pid, "status"
        assert_ctl "", 1, which, "-Q", "-p", server.pid, "status"
        assert_ctl "No pid '#{server.pid}' found\n", 1, which, "-p", server.pid, "stop"
        refute File.exist?("#{dir}/pid"), "the server removed its pidfile"
      end
    end

    define_method("test_halt_by_pid_with_#{which}") do
      Dir.mktmpdir do |dir|
        server = single_server(dir)
        assert_ctl "", 0, which, "-Q", "-p", server.pid, "halt"
        assert_equal Signal.list["QUIT"], server.wait_exit.termsig
      end
    end

    define_method("test_restart_by_state_file_is_a_hot_restart_with_#{which}") do
      Dir.mktmpdir do |dir|
        server = single_server(dir)
        assert_ctl "Command restart sent success\n", 0, which, "-S", "#{dir}/state", "restart"
        server.wait_for(/Restarting\.\.\..*Catamount starting.*Use Ctrl-C to stop/m)
        refute server.exited?, "the same process (exec)"
        assert_match(/^pid: #{server.pid}$/, File.read("#{dir}/state"))
        assert_equal 200, get(server.port, "/").status
      end
    end

    define_method("test_phased_restart_and_worker_count_in_a_cluster_with_#{which}") do
      Dir.mktmpdir do |dir|
        File.write("#{dir}/puma.rb", "preload_app! false\n")
        server = single_server(dir, "-w", "2", "-C", "#{dir}/puma.rb")
        server.wait_for(/Worker 0 \(PID: \d+\) booted.*Worker 1 \(PID: \d+\) booted|Worker 1 \(PID: \d+\) booted.*Worker 0 \(PID: \d+\) booted/m)
        assert_ctl "Command phased-restart sent success\n", 0, which, "-P", "#{dir}/pid", "phased-restart"
        server.wait_for(/Phased restart complete, phase: 1/, timeout: 40)
        assert_ctl "Command worker-count-up sent success\n", 0, which, "-p", server.pid, "worker-count-up"
        third = server.wait_for(/Worker 2 \(PID: (\d+)\) booted/)[1].to_i
        assert_ctl "Command worker-count-down sent success\n", 0, which, "-S", "#{dir}/state", "worker-count-down"
        server.wait_for(/Worker 2 \(PID: #{third}\) terminating: worker count lowered/)
        assert_equal 200, get(server.port, "/").status
      ensure
        kill_named_workers(server)
      end
    end

    define_method("test_reopen_log_with_#{which}") do
      Dir.mktmpdir do |dir|
        File.write("#{dir}/puma.rb", "stdout_redirect '#{dir}/out.log', '#{dir}/err.log', true\n")
        server = single_server(dir, "-C", "#{dir}/puma.rb", boot: false)
        assert wait_until { File.exist?("#{dir}/out.log") && File.read("#{dir}/out.log").include?("Use Ctrl-C") }, server.stderr
        File.rename("#{dir}/out.log", "#{dir}/out.old")
        assert_ctl "Command reopen-log sent success\n", 0, which, "-P", "#{dir}/pid", "reopen-log"
        assert wait_until { File.exist?("#{dir}/out.log") }, "the log was reopened"
        refute server.exited?
      end
    end
  end

  # ---- the control server's path ----

  # The JSON catamountctl or pumactl printed after "Command <cmd> sent success".
  def printed_json(out, command)
    first, body = out.split("\n", 2)
    assert_equal "Command #{command} sent success", first
    JSON.parse(body)
  end

  # stats, gc-stats, thread-backtraces and gc through `target` (flags naming the control
  # server) print what they should.
  def assert_control_commands(which, *target)
    out, err, status = ctl(which, *target, "stats")
    assert_equal ["", 0], [err, status]
    assert_equal 2, printed_json(out, "stats")["max_threads"]
    out, = ctl(which, *target, "gc-stats")
    assert_kind_of Integer, printed_json(out, "gc-stats")["count"]
    out, = ctl(which, *target, "thread-backtraces")
    assert printed_json(out, "thread-backtraces").all? { |t| t["name"].start_with?("Thread: TID-") }, out
    assert_ctl "Command gc sent success\n", 0, which, *target, "gc"
    assert_ctl "Puma is started\n", 0, which, *target, "status"
  end

  COMMANDS.each_key do |which|
    # Over TCP with the token the server generated, found in the state file.
    define_method("test_control_server_over_tcp_through_the_state_file_with_#{which}") do
      Dir.mktmpdir do |dir|
        server = single_server(dir, "-t", "2:2", "--control-url", "tcp://127.0.0.1:0")
        state = "#{dir}/state"
        token = File.read(state)[/^control_auth_token: (\h+)$/, 1]
        url = File.read(state)[/^control_url: (\S+)$/, 1]
        assert_equal 32, token&.size, File.read(state)

        assert_control_commands(which, "-S", state)
        assert_control_commands(which, "-C", url, "-T", token)

        # Refusals.
        assert_ctl "Unauthorized access to server (wrong auth token)\n", 1, which, "-C", url, "-T", token.reverse, "stats"
        assert_ctl "Unauthorized access to server (wrong auth token)\n", 1, which, "-C", url, "stats"
        assert_ctl "", 1, which, "-Q", "-C", url, "-T", "wrong", "stats"
        assert_ctl "Command error: { \"error\": \"reload_worker_directory not available\" }\n", 1,
                   which, "-S", state, "reload-worker-directory"

        # info goes by signal, to the state file's pid, even with a control server.
        if which == :catamountctl
          assert_ctl "Command info sent success\n", 0, which, "-S", state, "info"
          server.wait_for(/Thread #<Thread:.*run>/, stream: :stderr)
        end

        # A hot restart; the new run's token is in the state file written again.
        assert_ctl "Command restart sent success\n", 0, which, "-S", state, "restart"
        server.wait_for(/Restarting\.\.\..*Catamount starting.*Use Ctrl-C to stop/m)
        assert wait_until { File.read(state)[/^control_auth_token: (\h+)$/, 1].then { |t| t && t != token } }
        refute server.exited?, "the same process (exec)"
        assert_ctl "Command stop sent success\n", 0, which, "-S", state, "stop"
        server.wait_for(/Goodbye!/)
        server.wait_exit
        assert_ctl "Connection refused - connect(2) for \"127.0.0.1\" port #{url[/\d+\z/]}\n", 1, which, "-C", url, "status"
      end
    end

    # Over a UNIX socket without a token (none is sent, or one is and is ignored); a restart
    # over the control server is a hot one, with the control server back.
    define_method("test_control_server_over_unix_without_a_token_restart_and_stop_with_#{which}") do
      Dir.mktmpdir do |dir|
        url = "unix://#{dir}/ctl.sock"
        server = single_server(dir, "-t", "2:2", "--control-url", url, "--control-token", "none")
        assert_control_commands(which, "-C", url)
        assert_control_commands(which, "-C", url, "-T", "anything")
        assert_ctl "Command restart sent success\n", 0, which, "-C", url, "restart"
        server.wait_for(/Restarting\.\.\..*Catamount starting.*Use Ctrl-C to stop/m)
        refute server.exited?, "the same process (exec)"
        assert wait_until { ctl(which, "-C", url, "status")[2].zero? }, "the control server is back"
        assert_ctl "Command stop sent success\n", 0, which, "-C", url, "stop"
        server.wait_for(/Goodbye!/)
        server.wait_exit
      end
    end

    # A cluster's master answers; data_only refuses the actions.
    define_method("test_control_server_of_a_cluster_and_data_only_with_#{which}") do
      Dir.mktmpdir do |dir|
        File.write("#{dir}/puma.rb", <<~RUBY)
          activate_control_app "unix://#{dir}/ctl.sock", auth_token: "s3cret", data_only: true
        RUBY
        server = single_server(dir, "-w", "2", "-C", "#{dir}/puma.rb")
        server.wait_for(/Worker 0 \(PID: \d+\) booted.*Worker 1 \(PID: \d+\) booted|Worker 1 \(PID: \d+\) booted.*Worker 0 \(PID: \d+\) booted/m)
        stats = nil
        assert wait_until {
          out, = ctl(which, "-S", "#{dir}/state", "stats")
          stats = printed_json(out, "stats")
          stats["booted_workers"] == 2
        }, stats.inspect
        assert_equal 2, stats["worker_status"].size
        assert_ctl "Command error: Command \"stop\" unavailable\n", 1, which, "-S", "#{dir}/state", "stop"
        # The signal-only commands still go to the master's pid.
        assert_ctl "Command worker-count-up sent success\n", 0, which, "-S", "#{dir}/state", "worker-count-up"
        server.wait_for(/Worker 2 \(PID: \d+\) booted/)
      ensure
        kill_named_workers(server)
      end
    end
  end

  COMMANDS.each_key do |which|
    # fork_worker: refork by the pid (URG) and over the control server; the master's
    # reload-worker-directory.
    define_method("test_refork_by_pid_and_over_the_control_server_with_#{which}") do
      Dir.mktmpdir do |dir|
        File.write("#{dir}/puma.rb", "fork_worker 0\n")
        server = single_server(dir, "-w", "2", "-C", "#{dir}/puma.rb", "--control-url", "tcp://127.0.0.1:0",
                               "--control-token", "t")
        server.wait_for(/Worker 1 \(PID: \d+\) booted/)
        assert_ctl "Command refork sent success\n", 0, which, "-P", "#{dir}/pid", "refork"
        server.wait_for(/Refork complete/, timeout: 40)
        url = File.read("#{dir}/state")[/^control_url: (\S+)$/, 1]
        assert_ctl "Command refork sent success\n", 0, which, "-C", url, "-T", "t", "refork"
        assert wait_until(timeout: 40) { server.stdout.scan("Refork complete").size == 2 }, server.stdout
        assert_ctl "Command reload-worker-directory sent success\n", 0, which, "-S", "#{dir}/state", "reload-worker-directory"
      ensure
        kill_named_workers(server)
      end
    end
  end

  COMMANDS.each_key do |which|
    # An ssl:// control URL (the server's certificate not verified, as by pumactl), in a
    # cluster: stats, a refused token, a phased restart, a hot restart (the control server back
    # on a new port, found in the state file written again), stop.
    define_method("test_control_server_over_ssl_in_a_cluster_with_#{which}") do
      dir = certificates(Dir.mktmpdir)
      state = "#{dir}/state"
      server = single_server(dir, "-w", "2", "-t", "2:2", "--control-token", "T",
                             "--control-url", "ssl://127.0.0.1:0?key=#{dir}/key.pem&cert=#{dir}/cert.pem")
      server.wait_for(/Worker 1 \(PID: \d+\) booted/)
      url = File.read(state)[/^control_url: (\S+)$/, 1]
      assert_match %r{\Assl://127\.0\.0\.1:\d+\z}, url

      out, err, status = ctl(which, "-C", url, "-T", "T", "stats")
      assert_equal ["", 0], [err, status]
      assert printed_json(out, "stats").key?("worker_status"), out
      out, = ctl(which, "-S", state, "gc-stats")
      assert_kind_of Integer, printed_json(out, "gc-stats")["count"]
      assert_ctl "Unauthorized access to server (wrong auth token)\n", 1, which, "-C", url, "-T", "t", "stats"
      assert_ctl "Puma is started\n", 0, which, "-C", url, "status"

      assert_ctl "Command phased-restart sent success\n", 0, which, "-C", url, "-T", "T", "phased-restart"
      server.wait_for(/Phased restart complete, phase: 1/, timeout: 40)

      assert_ctl "Command restart sent success\n", 0, which, "-S", state, "restart"
      server.wait_for(/Restarting\.\.\..*Catamount starting/m)
      assert wait_until(timeout: 30) { File.read(state)[/^control_url: (\S+)$/, 1].then { |u| u && u != url } }
      assert wait_until(timeout: 30) { ctl(which, "-S", state, "stats")[2].zero? }, "the control server is back"
      refute server.exited?, "the same process (exec)"
      assert_ctl "Command stop sent success\n", 0, which, "-S", state, "stop"
      server.wait_for(/Goodbye!/)
      server.wait_exit
    ensure
      kill_named_workers(server)
      FileUtils.rm_rf(dir) if dir
    end
  end

  # An abstract socket name, in a cluster: stats, a phased restart, halt.
  def test_control_server_on_an_abstract_name_in_a_cluster
    name = "catamount-ctl-test-#{Process.pid}-#{rand(1 << 30)}"
    server = start_server("-w", "2", "--control-url", "unix://@#{name}", "--control-token", "t", "-C", "-",
                          "-b", "tcp://127.0.0.1:0")
    server.wait_for(/Worker 1 \(PID: \d+\) booted/)
    out, = ctl(:catamountctl, "-C", "unix://@#{name}", "-T", "t", "stats")
    assert printed_json(out, "stats").key?("worker_status"), out
    assert_ctl "Command phased-restart sent success\n", 0, :catamountctl, "-C", "unix://@#{name}", "-T", "t", "phased-restart"
    server.wait_for(/Phased restart complete, phase: 1/, timeout: 40)
    assert_ctl "Command halt sent success\n", 0, :catamountctl, "-C", "unix://@#{name}", "-T", "t", "halt"
    server.wait_for(/Stopping immediately/)
    server.wait_exit
  ensure
    kill_named_workers(server)
  end

  # The config file (-F, or config/puma.rb found in the working directory) names the pidfile.
  def test_pidfile_from_the_config_file
    Dir.mktmpdir do |dir|
      FileUtils.mkdir_p("#{dir}/config")
      File.write("#{dir}/config/puma.rb", "pidfile '#{dir}/server.pid'\n")
      server = start_server("-C", "#{dir}/config/puma.rb", "-b", "tcp://127.0.0.1:0")
      assert wait_for_file("#{dir}/server.pid")
      COMMANDS.each_key do |which|
        assert_ctl "Puma is started\n", 0, which, "status", chdir: dir
        assert_ctl "Puma is started\n", 0, which, "-F", "#{dir}/config/puma.rb", "status"
      end
      # Another environment looks for config/puma/<env>.rb first.
      FileUtils.mkdir_p("#{dir}/config/puma")
      File.write("#{dir}/config/puma/staging.rb", "pidfile '#{dir}/none.pid'\n")
      assert_ctl "No such file or directory @ rb_sysopen - #{dir}/none.pid\n", 1, :catamountctl, "-e", "staging", "status", chdir: dir
      # A mistake in the file is printed even with -Q.
      File.write("#{dir}/config/puma/staging.rb", "no_such_option 1\n")
      out, _, status = ctl(:catamountctl, "-Q", "-e", "staging", "status", chdir: dir)
      assert_equal 1, status
      assert_match(/staging\.rb:1: unknown configuration method no_such_option/, out)
      assert_ctl "Command stop sent success\n", 0, :catamountctl, "stop", chdir: dir
      assert_equal Signal.list["TERM"], server.wait_exit.termsig
    end
  end

  # The same words and exit statuses as pumactl, for what goes wrong.
  def test_mistakes_read_as_pumactls
    gone = dead_pid
    [
      [],
      %w[bogus],
      %w[-Q bogus],
      %w[-x stop],
      %w[--c x stop],
      %w[-F - stop],
      %w[-F - info],
      ["-F", "-", "-p", gone, "stop"],
      ["-Q", "-F", "-", "-p", gone, "stop"],
      ["-F", "-", "-p", gone, "status"],
      ["-F", "-", "-p", gone, "stop", "-Q"],
      %w[-F - -S /nonexistent/state stop],
      %w[-F - -P /nonexistent/pid stop],
      %w[-F - -p 1 stats],
      %w[-F - -p 1 reload-worker-directory],
      %w[-F - -C tcp://127.0.0.1:1 status],
      %w[-F - -C foo://x stop],
      %w[-F - -C unix:///nonexistent/ctl.sock stop],
      %w[-F /nonexistent/puma.rb stop]
    ].each do |args|
      want = ctl(:pumactl, *args)
      assert_equal want, ctl(:catamountctl, *args), "catamountctl #{args.join(' ')}"
    end
  end

  def test_help_and_version
    out, _, status = ctl(:catamountctl, "-H")
    assert_equal 0, status
    assert_match(/\AUsage: catamountctl .*\(gc\|gc-stats\|halt\|info\|/, out)
    %w[--state --quiet --pidfile --pid --control-url --control-token --config-file --environment --help --version].each do |flag|
      assert_includes out, flag
    end
    assert_ctl "#{Catamount::VERSION}\n", 0, :catamountctl, "-V"
  end

  # `start` runs the server (the same process: exec) with what the flags and config file say;
  # `restart` of a server that is gone does too.
  def test_start_and_restart_of_a_stopped_server
    Dir.mktmpdir do |dir|
      FileUtils.mkdir_p("#{dir}/config")
      File.write("#{dir}/config/puma.rb", <<~RUBY)
        bind "tcp://127.0.0.1:0"
        pidfile "#{dir}/server.pid"
        app { |_env| [200, {}, ["started #{'#{Process.pid}'}"]] }
      RUBY
      server = launch(["start"], command: COMMANDS[:catamountctl], chdir: dir, boot: true)
      assert_equal "started #{server.pid}", get(server.port, "/").body
      assert_equal "#{server.pid}\n", File.read("#{dir}/server.pid")
      # A hot restart runs the same command again (bin/catamount, as exec'd).
      assert_ctl "Command restart sent success\n", 0, :catamountctl, "restart", chdir: dir
      server.wait_for(/Restarting\.\.\..*Catamount starting.*Use Ctrl-C to stop/m)
      refute server.exited?
      assert_ctl "Command stop sent success\n", 0, :catamountctl, "stop", chdir: dir
      assert_equal Signal.list["TERM"], server.wait_exit.termsig

      File.write("#{dir}/server.pid", "#{dead_pid}\n")
      server = launch(["restart"], command: COMMANDS[:catamountctl], chdir: dir, boot: true)
      assert_equal "started #{server.pid}", get(server.port, "/").body
    end
  end

  # The config file's control server stays as the file says (data_only here): start does not
  # pass it again as flags, which would replace it.
  def test_start_leaves_the_config_files_control_server_as_it_is
    Dir.mktmpdir do |dir|
      FileUtils.mkdir_p("#{dir}/config")
      File.write("#{dir}/config/puma.rb", <<~RUBY)
        bind "tcp://127.0.0.1:0"
        state_path "#{dir}/state"
        activate_control_app "unix://#{dir}/ctl.sock", auth_token: "tok", data_only: true
        app { |_env| [200, {}, ["ok"]] }
      RUBY
      server = launch(["start"], command: COMMANDS[:catamountctl], chdir: dir, boot: true)
      out, = ctl(:catamountctl, "stats", chdir: dir)
      assert_kind_of Integer, printed_json(out, "stats")["requests_count"]
      assert_ctl "Command error: Command \"stop\" unavailable\n", 1, :catamountctl, "stop", chdir: dir
      assert_ctl "Command stop sent success\n", 0, :catamountctl, "-F", "-", "-p", server.pid, "stop"
      server.wait_exit
    end
  end
end
