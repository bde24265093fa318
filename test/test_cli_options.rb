# frozen_string_literal: true

require "helper"

# Flags that change where and how the app is found and shown.
class TestCliOptions < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def test_include_path
    server = start_server("-I", File.join(Support::APPS, "included"), app: "needs_include.ru")
    assert_equal "hello from an -I path", get(server.port, "/").body
  end

  def test_dir_changes_directory_before_loading
    server = start_server("--dir", Support::APPS, app: nil, boot: false)
    # No rackup given: config.ru is looked up in --dir, which has none.
    assert_equal 1, server.wait_exit.exitstatus
    assert_match(%r{rackup file config.ru not found \(in #{Regexp.escape(Support::APPS)}\)}, server.stderr)
    server = start_server("--dir", Support::APPS, "needs_include.ru", "-I", "included", app: nil)
    assert_equal "hello from an -I path", get(server.port, "/").body
  end

  def test_tag_shows_in_process_title
    server = start_server("--tag", "web-blue")
    title = File.read("/proc/#{server.pid}/cmdline").tr("\0", " ").strip
    assert_match(%r{\Acatamount \d+\.\d+\.\d+ \(http://127\.0\.0\.1:#{server.port}\) \[web-blue\]}, title)
  end

  # `--plugin NAME` loads the plugin as `plugin :NAME` would (it once loaded nothing).
  def test_plugin_flag_loads_the_plugin
    server = start_server("--plugin", "tmp_restart", env: { "PUMA_DEBUG" => "1" })
    server.wait_for(/^- tmp_restart: /)
    server = start_server("--plugin", "nosuch", boot: false)
    assert_equal 1, server.wait_exit.exitstatus
    assert_match(/--plugin nosuch: unknown plugin "nosuch"/, server.stderr)
  end

  def test_ipv6_loopback_bind
    skip "no IPv6 loopback here" unless Socket.ip_address_list.any?(&:ipv6_loopback?)
    server = start_server("-b", "tcp://[::1]:0")
    assert_match(%r{Listening on http://\[::1\]:\d+}, server.stdout)
    sock = Socket.tcp("::1", server.port, connect_timeout: 5)
    sock.write("GET /env HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
    env = JSON.parse(read_response(sock).body)
    assert_equal "::1", env["REMOTE_ADDR"]
    assert_equal "[::1]", env["SERVER_NAME"]
  end

  def test_two_binds_both_serve
    path = File.join(Dir.tmpdir, "cat-two-#{Process.pid}-#{rand(1 << 30)}.sock")
    server = start_server("-b", "tcp://127.0.0.1:0", "-b", "unix://#{path}")
    assert_equal 2, server.stdout.scan("Listening on").size
    assert_equal "hello", get(server.port, "/").body
    sock = UNIXSocket.new(path)
    sock.write("GET / HTTP/1.0\r\n\r\n")
    assert_match(/hello\z/, read_until_close(sock))
  end

  def test_requests_under_gc_stress
    server = start_server(app: "gc_stress.ru")
    port = server.port
    env = JSON.parse(raw_request(port, "POST /env?x=1 HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 2\r\n" \
                                       "Connection: close\r\n\r\nhi").body)
    assert_equal "1, 2", env["HTTP_X_A"]
    assert_equal "hi", env["body"]
    many = (1..60).map { |i| "X-M#{i}: v#{i}\r\n" }.join # more pairs than the env gathers at once
    env = JSON.parse(raw_request(port, "GET /env HTTP/1.1\r\nHost: h\r\n#{many}Connection: close\r\n\r\n").body)
    (1..60).each { |i| assert_equal "v#{i}", env["HTTP_X_M#{i}"] }
    assert_equal "", env["body"]
    assert_equal "a=1\nb=2", get(port, "/multi")["set-cookie"]
    assert_equal "000111", get(port, "/stream?n=2&size=3").body
    assert_equal 500, get(port, "/boom").status
    assert_equal "abc", raw_request(port, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" \
                                          "3\r\nabc\r\n0\r\n\r\n").body
  end
end

# Other ways to start the server (Bundler, ruby -Ilib exe/catamount, curl as the client) and
# what the listener does (backlog, accept gating).
class TestEntryPointsAndListener < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def test_bundle_exec_serves
    Dir.mktmpdir do |dir|
      File.write(File.join(dir, "Gemfile"), "gem \"catamount\", path: #{Support::ROOT.inspect}\n")
      File.write(File.join(dir, "config.ru"), "run ->(_) { [200, {}, ['bundled']] }\n")
      env = { "BUNDLE_GEMFILE" => File.join(dir, "Gemfile"), "BUNDLE_APP_CONFIG" => File.join(dir, ".bundle"),
              # `bundle install` writes the gem's executables into GEM_HOME/bin: a private one,
              # not the system's.
              "GEM_HOME" => File.join(dir, "gems"), "GEM_PATH" => "#{File.join(dir, 'gems')}:#{Gem.path.join(':')}" }
      out = IO.popen(env, %w[bundle install --local], chdir: dir, err: %i[child out], &:read)
      assert $?.success?, out
      server = launch([], env: env, chdir: dir, command: %w[bundle exec catamount -b tcp://127.0.0.1:0], boot: true)
      assert_equal "bundled", get(server.port, "/").body
    end
  end

  def test_ruby_with_lib_on_the_load_path_runs_exe
    server = launch(["-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "kitchen.ru")],
                    command: [RbConfig.ruby, "-I", File.join(Support::ROOT, "lib"), File.join(Support::ROOT, "exe", "catamount")],
                    boot: true)
    assert_equal "hello", get(server.port, "/").body
  end

  def test_curl_uploads_with_expect_continue_and_downloads
    skip "curl is not installed" unless system("command -v curl >/dev/null")
    server = start_server
    Dir.mktmpdir do |dir|
      upload = File.join(dir, "up")
      File.binwrite(upload, Random.new(5).bytes(2 << 20))
      out = IO.popen(["curl", "-sS", "--max-time", "20", "-H", "Expect: 100-continue", "--data-binary", "@#{upload}",
                      "http://127.0.0.1:#{server.port}/echo"], &:read)
      assert $?.success?
      assert_equal File.binread(upload), out.b
      out = IO.popen(["curl", "-sS", "--max-time", "20", "--http1.0", "http://127.0.0.1:#{server.port}/stream?n=3&size=2"], &:read)
      assert_equal "001122", out
    end
  end

  # While the only thread is busy a new connection is left in the kernel's accept queue, where
  # an idle worker process could take it, but only for a moment: then it is taken and its
  # request queued here. (Puma leaves it there until a thread is free.)
  def test_a_connection_waits_for_a_free_thread_only_a_moment
    server = start_server("-t", "1:1")
    Dir.mktmpdir do |dir|
      marker = File.join(dir, "in_app")
      release = File.join(dir, "release")
      busy = connect(server.port)
      busy.write("GET /hold?marker=#{marker}&release=#{release} HTTP/1.1\r\nHost: x\r\n\r\n")
      assert_equal "in app", wait_for_file(marker)
      waiting = connect(server.port)
      assert wait_until { accept_queue(server.port).zero? }, "taken while the only thread is busy"
      waiting.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      File.write(release, "")
      assert_equal "held", read_response(busy).body
      assert_equal "hello", read_response(waiting).body
    ensure
      busy&.close
      waiting&.close
    end
  end

  # Requests on the keep-alive connections already accepted keep the one thread busy without a
  # break. A new connection is served all the same, while that traffic goes on: it is not left
  # waiting for a free thread that keep-alive requests always get first.
  def test_a_new_connection_is_served_while_keep_alive_traffic_fills_the_pool
    server = start_server("-t", "1:1")
    Dir.mktmpdir do |dir|
      marker = File.join(dir, "in_app")
      under_wrk(server.port, "/sleep?s=0.003&marker=#{marker}", connections: 20) do
        # The app rewrites the marker on every request: a read can meet it just truncated, so
        # only its appearance is waited for.
        assert wait_for_file(marker), "the load runs"
        response = raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout: 10)
        assert_equal "hello", response.body
      end
    ensure
      # Requests wrk left queued would write the marker again while the directory is removed.
      server.kill
    end
  end

  # Connections established and not yet accepted on the listener at `port`.
  def accept_queue(port)
    `ss -ltnH 'sport = :#{port}'`.split[1].to_i
  end

  def test_listen_backlog_defaults_to_1024
    server = start_server
    line = `ss -ltnH 'sport = :#{server.port}'`.lines.first.to_s
    assert_equal 1024, line.split[2].to_i, line
    server = start_server("-b", "tcp://127.0.0.1:0?backlog=64")
    line = `ss -ltnH 'sport = :#{server.port}'`.lines.first.to_s
    assert_equal 64, line.split[2].to_i, line
  end
end
