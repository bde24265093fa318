# frozen_string_literal: true

require "helper"
require "open3"
require "timeout"

# `rackup -s catamount` (Debian's Rack 2.2 rackup, and Rack 3's rackup gem fetched by
# script/fetch-rack3) and `rails server -u catamount` (Debian's Rails 6.1, in an app `rails new`
# generates offline): each boots Catamount with the command's host, port and environment and
# the app's config/puma.rb, under Puma's precedence, serves, and stops on INT or TERM.
class TestHandlers < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  LIB = File.join(Support::ROOT, "lib")
  LOCK = Mutex.new

  CONFIG_RU = <<~'RUBY'
    run lambda { |env|
      body = "#{env["SERVER_SOFTWARE"]} #{ENV["RACK_ENV"]} #{Rack.release}"
      [200, { "content-type" => "text/plain", "content-length" => body.bytesize.to_s }, [body]]
    }
  RUBY

  def self.command(name)
    ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |dir| File.join(dir, name) }.find { |p| File.executable?(p) }
  end

  def need(name)
    path = self.class.command(name)
    skip "#{name} is not installed (script/bootstrap installs it)" unless path
    path
  end

  def app_dir(puma_rb: nil)
    dir = Dir.mktmpdir("catamount-handlers")
    (@dirs ||= []) << dir
    File.write(File.join(dir, "config.ru"), CONFIG_RU)
    if puma_rb
      FileUtils.mkdir_p(File.join(dir, "config"))
      File.write(File.join(dir, "config", "puma.rb"), puma_rb)
    end
    dir
  end

  def teardown
    super
    (@dirs || []).each { |dir| FileUtils.rm_rf(dir) }
  end

  # The environment of a command run here: none of the caller's Rack or Rails settings.
  CLEAN_ENV = %w[RACK_ENV RAILS_ENV APP_ENV PORT BINDING HOST PIDFILE BUNDLE_GEMFILE RUBYOPT WEB_CONCURRENCY
                 RAILS_MAX_THREADS RAILS_MIN_THREADS MIN_THREADS MAX_THREADS].to_h { |k| [k, nil] }.freeze

  def rackup(dir, *args, command: [RbConfig.ruby, need("rackup")], env: {})
    launch(["-I", LIB, "-s", "catamount", *args, "config.ru"], command: command, chdir: dir, env: CLEAN_ENV.merge(env))
  end

  def assert_banner(server, environment:, threads: nil, mode: "single")
    server.boot!
    out = server.stdout
    assert_match(/^(\[\d+\] )?Catamount starting in #{mode} mode/, out)
    assert_match(/^(\[\d+\] )?\*  Environment: #{environment}$/, out)
    assert_match(/^\*  Min threads: #{threads[0]}\n\*  Max threads: #{threads[1]}$/, out) if threads
    refute_match(/Puma/, out)
  end

  def assert_stopped_by(server, signal)
    server.signal(signal)
    status = server.wait_exit
    assert_match(/Goodbye/, server.stdout)
    if signal == "TERM"
      # As Puma: the stop is graceful, then the process ends by the signal it was sent.
      assert_equal Signal.list["TERM"], status.termsig, status.inspect
    else
      assert status.success?, "#{status.inspect}\n#{server.stderr}"
    end
  end

  def test_rackup_serves_with_its_host_port_and_environment
    server = rackup(app_dir, "-o", "127.0.0.1", "-p", "0", "-E", "production")
    assert_banner(server, environment: "production")
    assert_match(/\ACatamount #{Regexp.escape(Catamount::VERSION)} production 2\.2\./, get(server.port, "/").body)
    assert_stopped_by(server, "INT")
  end

  # Rack 2.2's rackup hands every option over as the user's (it names none as a default): as
  # under Puma, its host and port replace config/puma.rb's binds, and the file sets the rest.
  def test_rackup_reads_config_puma_rb_and_its_port_wins_over_the_files_bind
    file_port = free_port
    dir = app_dir(puma_rb: <<~RUBY)
      threads 2, 3
      bind "tcp://127.0.0.1:#{file_port}"
      on_booted { puts "config/puma.rb's hook ran" }
    RUBY
    server = rackup(dir, "-o", "127.0.0.1", "-p", "0", "-E", "production")
    assert_banner(server, environment: "production", threads: [2, 3])
    assert_equal [server.port], server.stdout.scan(/Listening on \S+:(\d+)/).flatten.map(&:to_i)
    refute_equal file_port, server.port
    server.wait_for(/config\/puma.rb's hook ran/)
    assert_equal 200, get(server.port, "/").status
    assert_stopped_by(server, "TERM")
  end

  # `-O Silent`: no boot or stop lines, the server serves all the same.
  def test_rackup_silent_option
    port = free_port
    server = rackup(app_dir, "-q", "-o", "127.0.0.1", "-p", port.to_s, "-E", "production", "-O", "Silent")
    listening = lambda do
      TCPSocket.new("127.0.0.1", port).close
      true
    rescue SystemCallError
      false
    end
    assert wait_until(timeout: 20, &listening), "nothing listens on #{port}\n#{server.stderr}"
    assert_equal 200, get(port, "/").status
    server.signal("INT")
    assert server.wait_exit.success?
    assert_equal "", server.stdout
  end

  # `workers` in config/puma.rb makes a cluster of the app rackup built; a phased restart's
  # fresh worker 0 is the whole rackup command run again.
  def test_rackup_cluster_from_config_and_a_phased_restart
    server = rackup(app_dir(puma_rb: "workers 2\n"), "-o", "127.0.0.1", "-p", "0", "-E", "production")
    assert_banner(server, environment: "production", mode: "cluster")
    server.wait_for(/Worker 1 \(PID: \d+\) booted/)
    server.signal("USR1")
    server.wait_for(/Phased restart complete, phase: 1/, timeout: 60)
    assert_match(/\ACatamount #{Regexp.escape(Catamount::VERSION)} production/, get(server.port, "/").body)
    assert_stopped_by(server, "TERM")
  end

  # A boot that fails says why in one line and makes the command exit non-zero.
  def test_rackup_boot_failure_exits_non_zero
    taken = TCPServer.new("127.0.0.1", 0)
    server = rackup(app_dir, "-o", "127.0.0.1", "-p", taken.addr[1].to_s, "-E", "production")
    status = server.wait_exit
    assert_equal 1, status.exitstatus, status.inspect
    assert_match(/^catamount: .*#{taken.addr[1]}/, server.stderr)
  ensure
    taken&.close
  end

  def test_rackup_handler_options_threads_and_verbose
    server = rackup(app_dir, "-o", "127.0.0.1", "-p", "0", "-E", "none", "-O", "Threads=1:4", "-O", "Verbose")
    assert_banner(server, environment: "none", threads: [1, 4])
    assert_equal 200, get(server.port, "/logged").status
    server.wait_for(%r{"GET /logged HTTP/1.1" 200}) # Rack::CommonLogger on stdout
    assert_stopped_by(server, "TERM")
  end

  # A hot restart (USR2) runs the whole rackup command again (rackup has consumed its ARGV by
  # the time the handler runs), keeping the PID and the listening socket.
  def test_rackup_hot_restart_runs_the_same_command
    port = free_port
    server = rackup(app_dir, "-o", "127.0.0.1", "-p", port.to_s, "-E", "production")
    assert_banner(server, environment: "production")
    assert_hot_restart(server, port)
    assert_stopped_by(server, "TERM")
  end

  def assert_hot_restart(server, port, path = "/")
    server.signal("USR2")
    server.wait_for(/Use Ctrl-C to stop.*Use Ctrl-C to stop/m, timeout: 30)
    assert_match(/PID: #{server.pid}\n\* Listening on http:\/\/127\.0\.0\.1:#{port} \(inherited\)/, server.stdout)
    assert_equal 200, get(port, path).status
  end

  def test_rack3_rackup_serves_through_rackup_handler
    rack = self.class.rack3("rack")
    rackup_lib = self.class.rack3("rackup")
    exe = File.join(File.dirname(rackup_lib), "bin", "rackup")
    server = rackup(app_dir, "-o", "127.0.0.1", "-p", "0", "-E", "production",
                    command: [RbConfig.ruby, "-I", rack, "-I", rackup_lib, exe])
    assert_banner(server, environment: "production")
    assert_match(/\ACatamount #{Regexp.escape(Catamount::VERSION)} production 3\./, get(server.port, "/").body)
    refute_match(/deprecated/, server.stderr) # found as Rackup::Handler, not through Rack::Handler
    assert_stopped_by(server, "TERM")
  end

  RAILS_LOCK = Mutex.new

  # A Rails 6.1 app made by `rails new` offline (no `bundle install`), its Gemfile cut down to
  # Rails and this checkout (Debian packages none of the other gems the generated one names),
  # locked from the installed gems; its generated config/puma.rb kept. Made once per run.
  def self.rails_template
    RAILS_LOCK.synchronize do
      @rails_template ||= begin
        rails = command("rails")
        bundle = command("bundle")
        raise Minitest::Skip, "rails or bundle is not installed (script/bootstrap installs ruby-rails)" unless rails && bundle

        root = Dir.mktmpdir("catamount-rails")
        at_exit { FileUtils.rm_rf(root) }
        skips = %w[bundle git javascript webpack-install bootsnap spring listen active-storage action-mailbox action-text
                   active-record test system-test sprockets action-cable action-mailer jbuilder].map { |s| "--skip-#{s}" }
        app = File.join(root, "app")
        run_bounded(CLEAN_ENV, rails, "new", app, *skips, "--quiet", chdir: root)
        File.write(File.join(app, "Gemfile"), "gem \"rails\", \"~> 6.1.0\"\ngem \"catamount\", path: #{Support::ROOT.inspect}\n")
        run_bounded(CLEAN_ENV, bundle, "lock", "--local", chdir: app)
        File.write(File.join(app, "config", "routes.rb"), <<~RUBY)
          Rails.application.routes.draw { get "/hello", to: "hello#show" }
        RUBY
        File.write(File.join(app, "app", "controllers", "hello_controller.rb"), <<~'RUBY')
          class HelloController < ApplicationController
            def show
              render plain: "hello from #{Rails.env} on #{request.env["SERVER_SOFTWARE"]}"
            end
          end
        RUBY
        app
      end
    end
  end

  def self.run_bounded(env, *cmd, chdir:)
    out, status = Timeout.timeout(120) { Open3.capture2e(env, *cmd, chdir: chdir) }
    raise "#{cmd.join(' ')} failed:\n#{out}" unless status.success?
  end

  # `bin/rails server -u catamount ARGS` in a fresh copy of the app.
  def rails_server(*args, env: {}, config: {})
    dir = Dir.mktmpdir("catamount-rails-app")
    (@dirs ||= []) << dir
    FileUtils.cp_r(File.join(self.class.rails_template, "."), dir)
    config.each do |path, text|
      FileUtils.mkdir_p(File.dirname(File.join(dir, path)))
      File.write(File.join(dir, path), text)
    end
    env = CLEAN_ENV.merge("BUNDLE_GEMFILE" => File.join(dir, "Gemfile"), "SECRET_KEY_BASE" => "x" * 64).merge(env)
    [launch(["server", "-u", "catamount", *args], command: [RbConfig.ruby, "bin/rails"], chdir: dir, env: env), dir]
  end

  # The user's -p, -b and -e win over the generated config/puma.rb's `port` and `environment`;
  # the file's threads (RAILS_MAX_THREADS) stand. TERM stops it, then Rails' cleanup runs.
  def test_rails_server_serves_on_its_port_in_production
    server, dir = rails_server("-p", "0", "-b", "127.0.0.1", "-e", "production", env: { "RAILS_MAX_THREADS" => "3" })
    assert_banner(server, environment: "production", threads: [3, 3])
    assert_match(/^=> Booting Catamount$/, server.stdout)
    assert_equal "hello from production on Catamount #{Catamount::VERSION}", get(server.port, "/hello").body
    pidfile = File.join(dir, "tmp", "pids", "server.pid")
    assert_equal server.pid.to_s, File.read(pidfile).strip
    # Rails' own restart command (`bin/rails server ... --restart`, which clears the pid file).
    assert_hot_restart(server, server.port, "/hello")
    assert_stopped_by(server, "TERM")
    assert_match(/^Exiting$/, server.stdout)
    refute File.exist?(pidfile), "the pid file is removed"
  end

  # What the user did not type (Rails' port 3000 and host, the environment it took from
  # RAILS_ENV) is a default: config/puma/production.rb's bind and threads win over it.
  def test_rails_server_defaults_yield_to_the_config_file
    file_port = free_port
    server, = rails_server(env: { "RAILS_ENV" => "production" },
                           config: { "config/puma/production.rb" => "threads 1, 2\nbind \"tcp://127.0.0.1:#{file_port}\"\n" })
    assert_banner(server, environment: "production", threads: [1, 2])
    assert_equal [file_port], server.stdout.scan(/Listening on \S+:(\d+)/).flatten.map(&:to_i)
    assert_equal "hello from production on Catamount #{Catamount::VERSION}", get(file_port, "/hello").body
    assert_stopped_by(server, "INT")
  end

  # The lib directory of Rack 3's `what` (rack or rackup), fetched once per run.
  def self.rack3(what)
    LOCK.synchronize do
      (@rack3 ||= {})[what] ||= begin
        out, err, status = Timeout.timeout(300) { Open3.capture3(File.join(Support::ROOT, "script", "fetch-rack3"), what) }
        raise "script/fetch-rack3 #{what} failed: #{err}" unless status.success?

        out.strip
      end
    end
  end
end
