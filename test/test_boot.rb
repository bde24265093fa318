# frozen_string_literal: true

require "helper"

# Booting: banner, CLI flags, config files, and every kind of bad input at boot.
class TestBoot < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def run_cli(*args, env: {}, chdir: nil)
    server = launch(args.flatten, env: env, chdir: chdir)
    status = server.wait_exit
    [status, server.stdout, server.stderr]
  end

  def test_banner_and_hello
    server = start_server("-t", "2:7", "-e", "production")
    out = server.stdout
    assert_match(/^Catamount starting in single mode\.\.\.$/, out)
    assert_match(/^\* Catamount version: \d+\.\d+\.\d+/, out)
    assert_match(/^\* Ruby version: ruby 3/, out)
    assert_match(/^\*  Min threads: 2$/, out)
    assert_match(/^\*  Max threads: 7$/, out)
    assert_match(/^\*  Environment: production$/, out)
    assert_match(/^\*          PID: #{server.pid}$/, out)
    assert_match(%r{^\* Listening on http://127\.0\.0\.1:\d+$}, out)
    assert_equal "hello", Net::HTTP.get(URI("http://127.0.0.1:#{server.port}/"))
  end

  def test_version_and_help
    status, out, = run_cli("--version")
    assert status.success?
    assert_match(/\Acatamount version \d+\.\d+\.\d+$/, out)
    status, out, = run_cli("-h")
    assert status.success?
    assert_includes out, "--threads MIN:MAX"
  end

  def test_bad_flags_exit_with_one_clear_line
    {
      %w[--frobnicate] => "unknown option --frobnicate",
      %w[--control-url ftp://x] => "--control-url: ",
      %w[--metrics-url auto] => "--metrics-url: auto is not a tcp:// or unix:// URL",
      %w[-w two] => "-w/--workers: \"two\" is not a whole number",
      %w[-t 9:3] => "-t/--threads: the minimum (9) is greater than the maximum (3)",
      %w[-b tcp://nohost] => "-b/--bind: invalid bind URL",
      %w[-p notaport] => "-p/--port:"
    }.each do |args, message|
      status, out, err = run_cli(*args)
      refute status.success?, args.inspect
      assert_equal 1, err.lines.size, "#{args.inspect}: #{err}"
      assert_includes err, message
      assert_empty out
    end
  end

  def test_missing_rackup_file
    status, _, err = run_cli("-b", "tcp://127.0.0.1:0", "/nonexistent/config.ru")
    refute status.success?
    assert_match(%r{catamount: rackup file /nonexistent/config.ru not found}, err)
  end

  def test_config_ru_that_raises_names_file_and_line
    status, out, err = run_cli("-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "raises_at_boot.ru"))
    refute status.success?
    assert_includes err, "this app cannot boot"
    assert_match(/raises_at_boot\.ru:3/, err)
    refute_includes out, "Listening on"
  end

  def test_port_in_use
    taken = TCPServer.new("127.0.0.1", 0)
    status, _, err = run_cli("-b", "tcp://127.0.0.1:#{taken.addr[1]}", File.join(Support::APPS, "kitchen.ru"))
    refute status.success?
    assert_match(/could not listen on tcp:\/\/127\.0\.0\.1:\d+: address already in use/, err)
  ensure
    taken&.close
  end

  def test_default_rackup_and_config_file_lookup
    Dir.mktmpdir do |dir|
      File.write(File.join(dir, "config.ru"), "run ->(_) { [200, {}, ['from default rackup']] }\n")
      Dir.mkdir(File.join(dir, "config"))
      File.write(File.join(dir, "config", "puma.rb"), "threads 3, 4\nbind 'tcp://127.0.0.1:0'\n")
      server = start_server(app: nil, chdir: dir)
      assert_match(/Min threads: 3$/, server.stdout)
      assert_match(/Max threads: 4$/, server.stdout)
      assert_equal "from default rackup", get(server.port, "/").body
    end
  end

  def test_cli_flags_win_over_config_file
    Dir.mktmpdir do |dir|
      conf = File.join(dir, "c.rb")
      File.write(conf, "threads 3, 4\nenvironment 'staging'\n")
      server = start_server("-C", conf, "-t", "1:2", "-b", "tcp://127.0.0.1:0")
      assert_match(/Max threads: 2$/, server.stdout)
      assert_match(/Environment: staging$/, server.stdout)
    end
  end

  def test_bad_config_lines_name_file_and_line
    Dir.mktmpdir do |dir|
      {
        "threads 1, 2\nthreads 5, 1\n" => /c\.rb:2: threads: the minimum \(5\) is greater/,
        "workers 2\nmax_io_threads -1\n" => /c\.rb:2: max_io_threads: -1 is not a whole number of threads/,
        "max_io_threads 'x'\n" => /c\.rb:1: max_io_threads: "x" is not a whole number of threads/,
        "\n\nfrobnicate 1\n" => /c\.rb:3: unknown configuration method frobnicate/,
        "port 'x'\n" => /c\.rb:1: port: "x" is not a port number/,
        "raise 'oops'\n" => /c\.rb:1: oops \(RuntimeError\)/,
        "threads 1,\n" => /c\.rb:\d+: .*syntax error/
      }.each do |source, message|
        conf = File.join(dir, "c.rb")
        File.write(conf, source)
        status, _, err = run_cli("-C", conf, File.join(Support::APPS, "kitchen.ru"))
        refute status.success?, source
        assert_match message, err, source
        refute_includes err, "panicked", source
      end
    end
  end

  # Root reads and writes everything, so these cases run the server as `nobody` from a
  # world-readable copy of the checkout's bin/, exe/ and lib/ (the clone itself may sit in a
  # private home directory).
  def unprivileged_command(dir)
    return [RbConfig.ruby, ServerProcess::BIN] unless Process.uid.zero?

    copy = File.join(dir, "catamount")
    FileUtils.mkdir_p(copy)
    %w[bin exe lib].each { |d| FileUtils.cp_r(File.join(Support::ROOT, d), copy) }
    FileUtils.chmod_R("a+rX", copy)
    ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", RbConfig.ruby, File.join(copy, "bin", "catamount")]
  end

  def test_unreadable_and_unwritable_files_stop_the_boot_with_one_line
    Dir.mktmpdir do |dir|
      File.chmod(0o755, dir)
      command = unprivileged_command(dir)
      app = File.join(dir, "config.ru")
      File.write(app, "run ->(_env) { [200, {}, ['x']] }\n")
      File.chmod(0o644, app)
      secret_app = File.join(dir, "secret.ru")
      File.write(secret_app, "run ->(_env) { [200, {}, ['x']] }\n")
      File.chmod(0o000, secret_app)
      secret_conf = File.join(dir, "secret.rb")
      File.write(secret_conf, "port 0\n")
      File.chmod(0o000, secret_conf)
      read_only = File.join(dir, "ro")
      Dir.mkdir(read_only, 0o555)
      {
        ["-b", "tcp://127.0.0.1:0", secret_app] => "catamount: rackup file #{secret_app} is not readable",
        ["-C", secret_conf, app] => "catamount: #{secret_conf}: cannot read config file (Permission denied)",
        ["-b", "tcp://127.0.0.1:0", "--pidfile", "#{read_only}/p.pid", app] =>
          "catamount: cannot write pidfile #{read_only}/p.pid: Permission denied",
        ["-b", "unix://#{read_only}/s.sock", app] => "catamount: could not listen on unix://#{read_only}/s.sock: permission denied"
      }.each do |args, line|
        server = launch(args, command: command, chdir: dir)
        status = server.wait_exit
        refute status.success?, args.inspect
        assert_equal "#{line}\n", server.stderr, args.inspect
        refute_includes server.stdout, "Listening on", args.inspect
      end
    end
  end

  def test_pidfile_written_and_removed
    Dir.mktmpdir do |dir|
      pidfile = File.join(dir, "server.pid")
      server = start_server("--pidfile", pidfile)
      assert_equal server.pid, File.read(pidfile).to_i
      server.signal("TERM")
      assert_equal Signal.list["TERM"], server.wait_exit.termsig
      refute File.exist?(pidfile), "removed before the process ends by SIGTERM"
    end
  end

  def test_silent_prints_nothing_but_serves
    server = launch(["-s", "-b", "unix://#{sock = "#{Dir.tmpdir}/cat-silent-#{Process.pid}-#{rand(1 << 30)}.sock"}",
                     File.join(Support::APPS, "kitchen.ru")])
    deadline = Time.now + 15
    sleep 0.05 until File.socket?(sock) || Time.now > deadline
    s = UNIXSocket.new(sock)
    s.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_match(/\AHTTP\/1.1 200 OK/, read_until_close(s))
    assert_empty server.stdout
  end

  def test_unix_socket_bind_and_cleanup
    path = File.join(Dir.tmpdir, "cat-#{Process.pid}-#{rand(1 << 30)}.sock")
    server = start_server("-b", "unix://#{path}")
    assert_includes server.stdout, "Listening on unix://#{path}"
    sock = UNIXSocket.new(path)
    sock.write("GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = read_response(sock)
    assert_equal "127.0.0.1", JSON.parse(response.body)["REMOTE_ADDR"]
    server.signal("TERM")
    assert_equal Signal.list["TERM"], server.wait_exit.termsig
    refute File.exist?(path)
  end

  def test_log_requests
    server = start_server("-v")
    get(server.port, "/?a=1")
    line = server.wait_for(%r{^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /\?a=1 HTTP/1\.1" 200 - \d+\.\d{4}$})
    assert line
  end

  # INT exits 0; TERM, after the same graceful stop, ends the process by SIGTERM as Puma's
  # does (exit status 143 in a shell), unless `raise_exception_on_sigterm false`.
  def test_sigint_and_sigterm_stop_gracefully
    server = start_server
    server.signal("INT")
    assert_equal 0, server.wait_exit.exitstatus
    assert_includes server.stdout, "- Goodbye!"
    server = start_server
    server.signal("TERM")
    assert_equal Signal.list["TERM"], server.wait_exit.termsig
    assert_includes server.stdout, "- Goodbye!"
  end
end
