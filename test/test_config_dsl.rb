# frozen_string_literal: true

require_relative "support/helper"
require "open3"

# Puma's config DSL, end to end: real config files, a real server, real sockets. Each option is
# shown by a change a client or the process's output can see.
class TestConfigDsl < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  KITCHEN = File.join(Support::APPS, "kitchen.ru")

  # Writes `source` as a config file in a fresh directory and boots with it; the block gets
  # the server and the directory. `#{dir}` in the source is the directory.
  def with_config(source, *args, app: "kitchen.ru", env: {}, boot: true)
    Dir.mktmpdir do |dir|
      conf = File.join(dir, "puma.rb")
      File.write(conf, source.gsub("DIR", dir))
      binds = source.match?(/^\s*(bind|port|clear_binds!)/) ? [] : ["-b", "tcp://127.0.0.1:0"]
      server = start_server("-C", conf, *binds, *args, app: app, env: env, boot: boot)
      yield server, dir
    end
  end

  def boot_failure(source, *args, env: {})
    Dir.mktmpdir do |dir|
      conf = File.join(dir, "puma.rb")
      File.write(conf, source.gsub("DIR", dir))
      out, err, status = Open3.capture3(env, RbConfig.ruby, ServerProcess::BIN, "-C", conf, *args, KITCHEN)
      refute status.success?, source
      refute_includes err, "panicked", source
      refute_match(/^\s+from /, err, "a backtrace instead of one line for:\n#{source}")
      [out, err]
    end
  end

  # Runs `script` in a fresh Ruby with lib/ on the load path: out, err, status.
  def run_ruby(script, *args)
    Open3.capture3(RbConfig.ruby, "-I", File.join(Support::ROOT, "lib"), "-e", script, *args)
  end

  def test_bind_port_and_default_host_add_listeners
    with_config(<<~RUBY) do |server|
      bind "tcp://127.0.0.1:0"
      set_default_host "::1"
      port 0
    RUBY
      assert_match %r{Listening on http://127\.0\.0\.1:\d+$}, server.stdout
      v6 = server.stdout[%r{Listening on http://\[::1\]:(\d+)$}, 1]
      assert v6, server.stdout
      assert_equal "hello", get(server.port, "/").body
      sock = connect(v6.to_i, host: "::1")
      sock.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert_equal "hello", read_response(sock).body
    ensure
      sock&.close
    end
  end

  def test_clear_binds_then_bind
    with_config("bind 'tcp://127.0.0.1:1'\nclear_binds!\nbind 'tcp://127.0.0.1:0'\n") do |server|
      assert_equal 1, server.stdout.scan("Listening on").size
      assert_equal "hello", get(server.port, "/").body
    end
  end

  def test_threads_single_number_form_shows_and_limits_concurrency
    with_config("threads 2\n") do |server|
      assert_match(/Min threads: 2$/, server.stdout)
      assert_match(/Max threads: 2$/, server.stdout)
      # Two requests meet at a barrier of two: both threads run at once.
      results = Array.new(2) { Thread.new { get(server.port, "/barrier?n=2&t=10").body } }.map(&:value)
      assert_equal %w[met met], results
    end
  end

  def test_supported_http_methods_and_content_length_limit
    with_config(<<~RUBY) do |server|
      supported_http_methods %w[GET HEAD POST PROPFIND]
      http_content_length_limit 10
    RUBY
      assert_equal 200, raw_request(server.port, "PROPFIND / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status
      assert_equal 501, raw_request(server.port, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").status
      assert_equal "0123456789", raw_request(server.port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789").body
      assert_equal 413, raw_request(server.port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n01234567890").status
    end
    with_config("supported_http_methods :any\n") do |server|
      assert_equal 200, raw_request(server.port, "BREW / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status
    end
  end

  def test_lowlevel_error_handler_shapes_the_500
    with_config(<<~RUBY, "-e", "production") do |server|
      lowlevel_error_handler do |error, env, status|
        [status + 3, { "content-type" => "text/plain" }, ["handled \#{error.class} on \#{env['PATH_INFO']}"]]
      end
    RUBY
      response = get(server.port, "/boom")
      assert_equal 503, response.status
      assert_equal "handled ArgumentError on /boom", response.body
      assert_equal "close", response["connection"]
      response = get(server.port, "/not_array")
      assert_equal "handled RuntimeError on /not_array", response.body
    end
    # One argument; and a handler that itself raises falls back to the default 500.
    with_config("lowlevel_error_handler ->(e) { e.message == 'kaboom' ? raise('again') : [500, {}, ['x']] }\n") do |server|
      assert_equal 500, get(server.port, "/boom").status
      assert_match(/lowlevel_error_handler failed/, server.wait_for(/lowlevel_error_handler failed.*/, stream: :stderr)[0])
    end
  end

  def test_keep_alive_knobs
    # max_fast_inline stands in for max_keep_alive when that is not set (Puma 7+).
    ["max_keep_alive 2\n", "max_fast_inline 2\n"].each do |source|
      with_config(source) do |server|
        sock = connect(server.port)
        2.times { sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n") }
        refute_equal "close", read_response(sock)["connection"], source
        assert_equal "close", read_response(sock)["connection"], source
      ensure
        sock&.close
      end
    end
    %w[queue_requests enable_keep_alives].each do |option|
      with_config("#{option} false\n") do |server|
        sock = connect(server.port)
        sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_equal "close", read_response(sock)["connection"], option
        assert_equal "", read_until_close(sock), option
      ensure
        sock&.close
      end
    end
  end

  # Every hook name Puma 5.6 through 8 knows, old and new, takes a block (keys where Puma
  # allows them); the single-mode ones run, the cluster ones are kept for cluster mode.
  def test_every_hook_name_is_accepted
    names = %w[before_fork before_worker_fork on_worker_fork after_worker_fork after_worker_boot
               before_worker_boot on_worker_boot before_worker_shutdown on_worker_shutdown
               after_worker_shutdown before_refork on_refork after_refork before_restart on_restart
               after_booted on_booted after_stopped on_stopped before_thread_start on_thread_start
               before_thread_exit on_thread_exit out_of_band]
    source = names.map { |n| "#{n} { }\n" }.join + "before_worker_boot(:db) { |index, data| }\nsilence_fork_callback_warning\n"
    with_config(source) do |server|
      assert_equal "hello", get(server.port, "/").body
      assert_equal "", server.stderr
    end
    _, err = boot_failure("after_booted(:key) { }\n")
    assert_match(/puma\.rb:1: after_booted takes no key/, err)
  end

  def test_directory_and_log_requests_from_the_file
    Dir.mktmpdir do |app_dir|
      File.write("#{app_dir}/config.ru", "run ->(_) { [200, {}, [Dir.pwd]] }\n")
      with_config("directory '#{app_dir}'\nrackup 'config.ru'\nlog_requests\n", app: nil) do |server|
        assert_equal File.realpath(app_dir), File.realpath(get(server.port, "/x").body)
        server.wait_for(%r{"GET /x HTTP/1\.1" 200})
      end
    end
  end

  def test_puma_debug_turns_on_debug_lines
    with_config("plugin :tmp_restart\n", env: { "PUMA_DEBUG" => "1" }) do |server|
      server.wait_for(/^- tmp_restart: /)
    end
  end

  def test_hooks_run_in_single_mode_and_cluster_hooks_warn
    with_config(<<~RUBY, "-t", "1:1") do |server, dir|
      on_booted { File.write("DIR/booted", "old name") }
      after_booted { File.write("DIR/booted2", "new name") }
      before_thread_start { File.write("DIR/thread_start", "yes") }
      on_thread_exit { File.write("DIR/thread_exit", "yes") }
      out_of_band { File.write("DIR/oob", "yes") }
      after_stopped { File.write("DIR/stopped", "yes") }
      on_worker_boot { File.write("DIR/worker_boot", "never") }
      before_fork { }
      raise_exception_on_sigterm false
    RUBY
      assert_equal "old name", wait_for_file("#{dir}/booted")
      assert_equal "new name", wait_for_file("#{dir}/booted2")
      assert_equal "hello", get(server.port, "/").body
      assert_equal "yes", wait_for_file("#{dir}/thread_start")
      assert_equal "yes", wait_for_file("#{dir}/oob")
      assert_match(/Warning: before_worker_boot is a cluster-mode hook/, server.stderr)
      assert_match(/Warning: before_fork is a cluster-mode hook/, server.stderr)
      server.signal("TERM")
      assert_equal 0, server.wait_exit.exitstatus
      assert_equal "yes", File.read("#{dir}/stopped")
      assert_equal "yes", File.read("#{dir}/thread_exit")
      refute File.exist?("#{dir}/worker_boot")
    end
    with_config("before_fork { }\nsilence_fork_callback_warning\n") do |server|
      refute_match(/Warning/, server.stderr)
    end
  end

  def test_a_failing_hook_is_reported_and_the_server_keeps_serving
    with_config("after_booted { raise 'hook broke' }\n") do |server|
      server.wait_for(/WARNING hook after_booted \(.*puma\.rb:1\) failed with exception \(RuntimeError\) hook broke/, stream: :stderr)
      assert_equal "hello", get(server.port, "/").body
    end
  end

  def test_sigterm_ends_the_process_by_sigterm_as_puma_does
    with_config("") do |server|
      server.signal("TERM")
      status = server.wait_exit
      assert_equal Signal.list["TERM"], status.termsig, status.inspect
      assert_includes server.stdout, "- Goodbye!"
    end
  end

  def test_custom_logger_and_log_formatter
    with_config(<<~RUBY, "-v", boot: false) do |server, dir|
      class FileLog
        def initialize(path) = @path = path
        def write(line) = File.write(@path, line, mode: "a")
      end
      custom_logger FileLog.new("DIR/log")
      log_formatter { |line| "[fmt] \#{line}" }
    RUBY
      assert wait_until { read_or_empty("#{dir}/log").include?("Use Ctrl-C") }, server.stderr
      port = File.read("#{dir}/log")[%r{Listening on http://127\.0\.0\.1:(\d+)}, 1].to_i
      get(port, "/?x=1")
      assert wait_until { read_or_empty("#{dir}/log").include?("GET /?x=1") }
      log = File.read("#{dir}/log")
      assert_match(/\[fmt\] \* Listening on/, log)
      assert_match(%r{"GET /\?x=1 HTTP/1\.1" 200}, log)
      refute_match(/GET/, server.stdout)
    end
  end

  def test_stdout_redirect_state_path_and_pidfile
    Dir.mktmpdir do |logs|
      with_config(<<~RUBY, boot: false) do |server, dir|
        stdout_redirect "#{logs}/out.log", "#{logs}/err.log", true
        state_path "DIR/state.yml"
        state_permission 0o600
        pidfile "DIR/pid"
      RUBY
        assert wait_until { read_or_empty("#{logs}/out.log").include?("Use Ctrl-C") }, server.stderr
        log = File.read("#{logs}/out.log")
        assert_match(/=== catamount startup: /, log)
        port = log[/Listening on http:\/\/127\.0\.0\.1:(\d+)/, 1].to_i
        assert_match(/^pid: #{server.pid}$/, File.read("#{dir}/state.yml"))
        assert_equal 0o600, File.stat("#{dir}/state.yml").mode & 0o777
        assert_equal "#{server.pid}\n", File.read("#{dir}/pid")
        assert_equal "", server.stdout
        # HUP with redirected logs reopens them (for logrotate) instead of stopping.
        File.rename("#{logs}/out.log", "#{logs}/out.old")
        server.signal("HUP")
        assert wait_until { File.exist?("#{logs}/out.log") }
        assert_equal "hello", get(port, "/").body
        refute server.exited?
      end
    end
  end

  # A supervisor may signal as soon as the pidfile exists (logrotate's postrotate sends HUP):
  # the signal is handled then, in single mode and by a cluster's master; here the logs are
  # reopened. (Signals were once trapped only after the boot lines, and a HUP in between lost.)
  def test_a_signal_sent_as_soon_as_the_pidfile_exists_is_handled
    ["", "workers 2\n"].each do |cluster|
      Dir.mktmpdir do |logs|
        with_config(<<~RUBY, boot: false) do |server, dir|
          #{cluster}stdout_redirect "#{logs}/out.log", "#{logs}/err.log", true
          pidfile "DIR/pid"
        RUBY
          deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
          sleep 0.001 until File.size?("#{dir}/pid") || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
          File.rename("#{logs}/out.log", "#{logs}/out.old")
          server.signal("HUP")
          assert wait_until(timeout: 20) { File.exist?("#{logs}/out.log") }, "#{cluster}logs reopened"
          assert wait_until(timeout: 20) { "#{read_or_empty("#{logs}/out.old")}#{read_or_empty("#{logs}/out.log")}".include?("Use Ctrl-C") }
          port = "#{read_or_empty("#{logs}/out.old")}#{read_or_empty("#{logs}/out.log")}"[/Listening on http:\/\/127\.0\.0\.1:(\d+)/, 1].to_i
          assert_equal "hello", get(port, "/").body
          refute server.exited?, cluster
        ensure
          kill_named_workers(server)
        end
      end
    end
  end

  def read_or_empty(path)
    File.read(path)
  rescue Errno::ENOENT
    ""
  end

  def test_idle_timeout_stops_the_server
    with_config("idle_timeout 1\nraise_exception_on_sigterm false\n") do |server|
      assert_equal "hello", get(server.port, "/").body
      status = server.wait_exit(timeout: 15)
      assert_equal 0, status.exitstatus
      assert_includes server.stdout, "Idle timeout reached"
    end
  end

  def test_app_load_get_and_inject
    Dir.mktmpdir do |extra_dir|
      extra = File.join(extra_dir, "extra.rb")
      File.write(extra, "threads 3, 3\n")
      with_config(<<~RUBY, app: nil) do |server|
        load "#{extra}"
        inject { tag "injected" }
        restart_command "bin/x"
        app do |env|
          [200, {}, ["inline app, max \#{get(:max_threads)}, tag \#{get(:tag)}, \#{get(:nothing, 'default')}, \#{get(:restart_cmd)}"]]
        end
      RUBY
        assert_match(/Max threads: 3$/, server.stdout)
        # restart_command is read under Puma's key, restart_cmd (the definitions say so).
        assert_equal "inline app, max 3, tag injected, default, bin/x", get(server.port, "/").body
      end
    end
  end

  def test_get_reads_pumas_keys_for_what_the_file_set
    with_config(<<~RUBY, app: nil) do |server|
      set_default_host "127.0.0.1"
      port 0
      quiet
      extra_runtime_dependencies
      app do |env|
        [200, {}, [[default_host, get(:default_host), get(:binds), get(:log_requests), get(:extra_runtime_dependencies), get(:workers)].inspect]]
      end
    RUBY
      assert_equal '["127.0.0.1", "127.0.0.1", ["tcp://127.0.0.1:0"], false, [], nil]', get(server.port, "/").body
    end
  end

  # A check between two options waits for the whole file: `get` after the first line does not
  # refuse a value a later line makes valid.
  def test_get_between_two_options_that_are_checked_together
    with_config(<<~RUBY, app: nil) do |server|
      worker_timeout 3
      read = get(:worker_timeout)
      worker_check_interval 1
      app { |_env| [200, {}, [read.inspect]] }
    RUBY
      assert_equal "3.0", get(server.port, "/").body
    end
  end

  # Options that would take the test's stdout or a port: read
  # while the file is evaluated, without a server.
  def test_get_reads_redirect_and_control_keys
    Dir.mktmpdir do |dir|
      conf = File.join(dir, "puma.rb")
      File.write(conf, <<~RUBY)
        $got = [default_host]
        stdout_redirect "out.log", "err.log", true
        activate_control_app "tcp://127.0.0.1:9293"
        set_default_host "::1"
        port 3000
        $got += [get(:redirect_stdout), get(:redirect_stderr), get(:redirect_append), get(:control_url), get(:binds)]
      RUBY
      script = <<~RUBY
        require "catamount"
        Catamount::Configuration.load(Catamount::Native.parse_cli(["-C", ARGV[0]]))
        p $got
      RUBY
      out, err, status = run_ruby(script, conf)
      assert status.success?, err
      assert_equal %(["0.0.0.0", "out.log", "err.log", true, "tcp://127.0.0.1:9293", ["tcp://[::1]:3000"]]\n), out
    end
  end

  def test_option_methods_are_not_hidden_by_the_dsls_own
    script = <<~RUBY
      require "catamount"
      dsl = Catamount::DSL
      names = Catamount::Native.dsl_options.map(&:to_sym)
      own = (dsl.instance_methods(false) + dsl.private_instance_methods(false)).uniq
      # One definition (the recorder) serves every option but plugin.
      p names.map { |n| n == :plugin ? nil : dsl.instance_method(n).source_location }.compact.uniq.size
      p own.size > names.size
    RUBY
    out, err, status = run_ruby(script)
    assert status.success?, err
    assert_equal "1\ntrue\n", out
  end

  def test_single_and_cluster_blocks
    with_config(<<~RUBY) do |server|
      single { threads 4, 4 }
      cluster { threads 7, 7 }
    RUBY
      assert_match(/Max threads: 4$/, server.stdout)
    end
    _, err = boot_failure("single { workers 2 }\n")
    assert_match(/puma\.rb:1: a single block cannot change the number of workers/, err)
  end

  def test_plugins_built_in_third_party_and_unknown
    Dir.mktmpdir do |lib|
      FileUtils.mkdir_p("#{lib}/puma/plugin")
      File.write("#{lib}/puma/plugin/marker.rb", <<~RUBY)
        Puma::Plugin.create do
          def config(dsl)
            dsl.tag "from-plugin"
          end

          def start(launcher)
            launcher.events.on_booted { File.write(ENV.fetch("MARKER"), "started \#{Puma.stats_hash[:max_threads]}") }
          end
        end
      RUBY
      marker = File.join(lib, "started")
      with_config("plugin :tmp_restart\nplugin :systemd\nplugin :marker\n", "-I", lib, env: { "MARKER" => marker }) do |server|
        assert_equal "started 5", wait_for_file(marker)
        assert_equal "hello", get(server.port, "/").body
        assert_match(/from-plugin/, File.read("/proc/#{server.pid}/cmdline"))
      end
    end
    _, err = boot_failure("\nplugin :no_such_plugin\n")
    assert_match(/puma\.rb:2: unknown plugin "no_such_plugin"/, err)
  end

  # docs/configuration.md's options table is made from the option definitions (a Rust test keeps
  # it so); each row's example is a config-file line that the DSL accepts and that resolves.
  def test_every_documented_example_is_accepted
    docs = File.read(File.join(Support::ROOT, "docs", "configuration.md"))
    table = docs[/<!-- BEGIN options table.*?\n(.*?)<!-- END options table -->/m, 1]
    examples = table.lines.drop(2).filter_map do |row|
      cell = row.split(/(?<!\\)\|/)[4].to_s.strip
      cell.delete_prefix("`").delete_suffix("`").gsub("\\|", "|") unless cell.empty?
    end
    assert_operator examples.size, :>, 40
    Dir.mktmpdir do |dir|
      files = examples.each_with_index.map do |example, i|
        File.join(dir, "#{i}.rb").tap { |f| File.write(f, "#{example}\n") }
      end
      script = <<~RUBY
        require "catamount"
        ARGV.each do |file|
          Catamount::Configuration.load(Catamount::Native.parse_cli(["-C", file]))
        rescue Catamount::Error => e
          puts "\#{File.read(file).chomp} => \#{e.message}"
        end
      RUBY
      out, err, status = run_ruby(script, *files)
      assert status.success?, err
      assert_equal "", out
    end
  end

  def test_cluster_settings_boot_in_single_mode
    with_config("", env: { "WEB_CONCURRENCY" => "2" }) do |server|
      assert_match(/Workers: 2$/, server.stdout, "WEB_CONCURRENCY is the default worker count")
    end
    # The same settings with no workers boot (Rails files set worker_timeout in development).
    with_config("worker_timeout 3600\npreload_app!\nworkers 0\nfork_worker\nnakayoshi_fork\n" \
                "wait_for_less_busy_worker 0.01\nworker_boot_timeout 30\nworker_shutdown_timeout 5\n" \
                "worker_check_interval 2\nworker_culling_strategy :oldest\nprune_bundler false\n" \
                "silence_single_worker_warning\nio_selector_backend :epoll\nrestart_command 'x'\n") do |server|
      assert_equal "hello", get(server.port, "/").body
    end
  end

  def test_bad_config_names_file_line_and_option
    {
      "supported_http_methods %w[get]\n" => /puma\.rb:1: supported_http_methods: "get" is not an upper-case method name/,
      "\nset_remote_address hedaer: 'X'\n" => /puma\.rb:2: set_remote_address: unknown key "hedaer"/,
      "ssl_bind '0.0.0.0', 9443, cert: 'c.pem', verify_mode: 'peer'\n" => /puma\.rb:1: ssl_bind: a cert needs its key/,
      "\n\nbind 'ssl://0.0.0.0:9443?cert=c&key=k&min_version=TLSv1_1'\n" =>
        /puma\.rb:3: .*min_version=TLSv1_1: only TLS 1\.2 and 1\.3 are spoken/,
      "after_booted\n" => /puma\.rb:1: after_booted needs a block \(ArgumentError\)/,
      "lowlevel_error_handler 5\n" => /puma\.rb:1: lowlevel_error_handler needs an object/,
      "persistent_timeout 'soon'\n" => /puma\.rb:1: persistent_timeout: expected a number of seconds/,
      "worker_culling_strategy :random\n" => /puma\.rb:1: worker_culling_strategy: expected one of :youngest, :oldest/,
      "threads 1, 2\nnot_a_method 3\n" => /puma\.rb:2: unknown configuration method not_a_method/,
      "x = nil\nx.fetch(1)\n" => /puma\.rb:2: undefined method `fetch' for nil/
    }.each do |source, message|
      _, err = boot_failure(source)
      assert_match message, err, source
      assert_equal 1, err.lines.size, err
    end
  end

  def test_environment_variables
    Dir.mktmpdir do |dir|
      File.write("#{dir}/config.ru", "run ->(_) { [200, {}, [ENV['RACK_ENV']]] }\n")
      server = start_server("--no-config", "-b", "tcp://127.0.0.1:0", app: nil, chdir: dir,
                            env: { "PUMA_MIN_THREADS" => "2", "MAX_THREADS" => "6", "RAILS_ENV" => "staging",
                                   "PUMA_PERSISTENT_TIMEOUT" => "1", "WEB_CONCURRENCY" => "0" })
      assert_match(/Min threads: 2$/, server.stdout)
      assert_match(/Max threads: 6$/, server.stdout)
      assert_equal "staging", get(server.port, "/").body
      sock = connect(server.port)
      sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      read_response(sock)
      assert_equal "", read_until_close(sock, timeout: 10), "PUMA_PERSISTENT_TIMEOUT=1 closes the idle connection"
    ensure
      sock&.close
    end
  end

  def test_puma_log_config_lists_the_options
    with_config("threads 2, 3\n", env: { "PUMA_LOG_CONFIG" => "1" }) do |server|
      assert_match(/^Configuration:$/, server.stdout)
      assert_match(/^- max_threads: 3$/, server.stdout)
      assert_match(/^- persistent_timeout: 65\.0$/, server.stdout)
    end
  end

  def env_of(port, raw_head = "GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
    JSON.parse(raw_request(port, "#{raw_head}\r\n").body)
  end

  def test_set_remote_address_modes_and_url_scheme
    with_config("set_remote_address header: 'X-Real-IP'\nrack_url_scheme 'https'\n") do |server|
      env = env_of(server.port, "GET /env HTTP/1.1\r\nHost: x\r\nX-Real-IP: 10.1.2.3, 10.9.9.9\r\nConnection: close\r\n")
      assert_equal "10.1.2.3", env["REMOTE_ADDR"]
      assert_equal "https", env["rack.url_scheme"]
      assert_equal "127.0.0.1", env_of(server.port)["REMOTE_ADDR"], "no header: the socket's peer"
    end
    with_config("set_remote_address '203.0.113.9'\n") do |server|
      assert_equal "203.0.113.9", env_of(server.port)["REMOTE_ADDR"]
    end
    with_config("set_remote_address :localhost\n") do |server|
      assert_equal "127.0.0.1", env_of(server.port)["REMOTE_ADDR"]
    end
  end

  def test_proxy_protocol_v1
    with_config("set_remote_address proxy_protocol: :v1\n") do |server|
      sock = connect(server.port)
      sock.write("PROXY TCP4 198.51.100.7 10.0.0.1 40000 80\r\nGET /env HTTP/1.1\r\nHost: x\r\n\r\n")
      assert_equal "198.51.100.7", JSON.parse(read_response(sock).body)["REMOTE_ADDR"]
      # The line counts for the whole connection; it is not looked for again.
      sock.write("GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert_equal "198.51.100.7", JSON.parse(read_response(sock).body)["REMOTE_ADDR"]
      assert_equal "127.0.0.1", env_of(server.port)["REMOTE_ADDR"], "no PROXY line: plain HTTP"
      bad = connect(server.port)
      bad.write("PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
      assert_equal "", read_until_close(bad), "a malformed PROXY line is dropped without an answer"
      assert_equal "hello", get(server.port, "/").body
    ensure
      sock&.close
      bad&.close
    end
  end

  def test_allow_underscore_headers_false_drops_them
    with_config("allow_underscore_headers false\n") do |server|
      env = env_of(server.port, "GET /env HTTP/1.1\r\nHost: x\r\nX_Tenant: evil\r\nX-Other: ok\r\nConnection: close\r\n")
      refute env.key?("HTTP_X_TENANT")
      assert_equal "ok", env["HTTP_X_OTHER"]
    end
  end

  def test_early_hints
    Dir.mktmpdir do |dir|
      File.write("#{dir}/hints.ru", <<~RUBY)
        run lambda { |env|
          env["rack.early_hints"].call("link" => "</style.css>; rel=preload; as=style")
          [200, { "content-type" => "text/plain" }, ["after hints"]]
        }
      RUBY
      server = launch(["--early-hints", "--no-config", "-b", "tcp://127.0.0.1:0", "#{dir}/hints.ru"], boot: true)
      sock = connect(server.port)
      sock.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      raw = read_until_close(sock)
      assert_match(%r{\AHTTP/1\.1 103 Early Hints\r\nlink: </style\.css>; rel=preload; as=style\r\n\r\nHTTP/1\.1 200 OK\r\n}, raw)
      assert raw.end_with?("after hints")
      sock.close
      sock = connect(server.port)
      sock.write("GET / HTTP/1.0\r\n\r\n")
      assert_match(%r{\AHTTP/1\.0 200 OK}, read_until_close(sock), "no 103 for HTTP/1.0")
    ensure
      sock&.close
    end
  end

  def test_drain_on_shutdown_serves_the_backlog
    with_config("drain_on_shutdown\nthreads 1, 1\nraise_exception_on_sigterm false\n") do |server|
      busy = connect(server.port)
      busy.write("GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
      # The one thread is busy, so this connection waits in the listen backlog.
      waiting = connect(server.port)
      waiting.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      sleep 0.2 # lets both reach the server; the outcome below does not depend on it
      server.signal("TERM")
      assert_equal "slept", read_response(busy).body
      response = read_response(waiting)
      assert_equal "hello", response.body
      assert_equal "close", response["connection"]
      assert_equal 0, server.wait_exit.exitstatus
    ensure
      busy&.close
      waiting&.close
    end
  end

  def test_fiber_per_request_gives_clean_fiber_locals
    Dir.mktmpdir do |dir|
      File.write("#{dir}/locals.ru", <<~RUBY)
        run lambda { |_env|
          seen = Thread.current[:leftover].inspect
          Thread.current[:leftover] = "from an earlier request"
          [200, {}, [seen]]
        }
      RUBY
      [["clean_thread_locals\n", %w[nil nil]], ["", ["nil", '"from an earlier request"']]].each do |source, expected|
        File.write("#{dir}/c.rb", "threads 1, 1\n#{source}")
        server = launch(["-C", "#{dir}/c.rb", "-b", "tcp://127.0.0.1:0", "#{dir}/locals.ru"], boot: true)
        assert_equal expected, Array.new(2) { get(server.port, "/").body }, source
      end
    end
  end

  def test_lookup_order_repeatable_config_and_precedence
    Dir.mktmpdir do |dir|
      File.write("#{dir}/config.ru", "run ->(_) { [200, {}, ['default rackup']] }\n")
      File.write("#{dir}/other.ru", "run ->(_) { [200, {}, ['positional rackup']] }\n")
      FileUtils.mkdir_p("#{dir}/config/puma")
      File.write("#{dir}/config/puma.rb", "threads 1, 1\nbind 'tcp://127.0.0.1:0'\n")
      File.write("#{dir}/config/puma/staging.rb", "threads 2, 2\nbind 'tcp://127.0.0.1:0'\nrackup 'config.ru'\n")
      server = start_server("-e", "staging", app: nil, chdir: dir)
      assert_match(/Max threads: 2$/, server.stdout, "config/puma/<env>.rb comes first")
      server = start_server(app: nil, chdir: dir, env: { "RACK_ENV" => "staging" })
      assert_match(/Max threads: 2$/, server.stdout, "the environment for the lookup comes from RACK_ENV too")
      server = start_server(app: nil, chdir: dir)
      assert_match(/Max threads: 1$/, server.stdout, "then config/puma.rb")
      server = start_server("--no-config", "-b", "tcp://127.0.0.1:0", app: nil, chdir: dir)
      assert_match(/Max threads: 5$/, server.stdout, "--no-config reads neither")
      server = start_server("-C", "-", "-b", "tcp://127.0.0.1:0", app: nil, chdir: dir)
      assert_match(/Max threads: 5$/, server.stdout, "-C - reads neither")
      File.write("#{dir}/a.rb", "threads 3, 3\ntag 'from-a'\n")
      File.write("#{dir}/b.rb", "threads 4, 4\n")
      server = start_server("-C", "a.rb", "-C", "b.rb", "-b", "tcp://127.0.0.1:0", "other.ru", app: nil, chdir: dir)
      assert_match(/Max threads: 4$/, server.stdout, "a later -C file wins")
      assert_match(/from-a/, File.read("/proc/#{server.pid}/cmdline"), "and both are read")
      assert_equal "positional rackup", get(server.port, "/").body
      server = start_server("-C", "config/puma/staging.rb", "-t", "6:6", "-b", "tcp://127.0.0.1:0", "other.ru", app: nil, chdir: dir)
      assert_match(/Max threads: 6$/, server.stdout, "flags win over the file")
      assert_equal "positional rackup", get(server.port, "/").body, "the positional rackup wins over the file's"
    end
  end

  def test_debug_and_shutdown_debug
    with_config("debug\nshutdown_debug\nplugin :tmp_restart\nraise_exception_on_sigterm false\n") do |server|
      server.wait_for(/^- tmp_restart: /)
      server.signal("TERM")
      assert_equal 0, server.wait_exit.exitstatus
      assert_match(/^Thread #<Thread:.*run>$/, server.stderr, "every thread's backtrace at shutdown")
    end
  end
end
