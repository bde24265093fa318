# frozen_string_literal: true

require_relative "support/helper"

# The config/puma.rb files Rails generates, booted the way `bin/rails server` and a Procfile do:
# from the app's directory, no -C (the default lookup finds config/puma.rb), settings from the
# environment. Plus the Puma shim meeting the real puma gem in one process.
class TestRailsConfig < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  # The template Debian's railties ships (read here, at test time; never copied into the repo).
  RAILS_TEMPLATE = Dir["/usr/share/rubygems-integration/all/gems/railties-*/lib/rails/generators/rails/app/templates/config/puma.rb.tt"].first

  # The shape of the file Rails 7.2 / 8 generates, in our own words: the same DSL calls.
  MODERN_CONFIG = <<~RUBY
    threads_count = ENV.fetch("RAILS_MAX_THREADS", 3)
    threads threads_count

    rails_env = ENV.fetch("RAILS_ENV", "development")
    environment rails_env

    case rails_env
    when "production"
      require "concurrent-ruby"
      concurrency = ENV.fetch("WEB_CONCURRENCY", "1")
      worker_count =
        if concurrency == "auto"
          Concurrent.respond_to?(:available_processor_count) ? Concurrent.available_processor_count.floor : Concurrent.processor_count
        else
          Integer(concurrency)
        end
      workers worker_count if worker_count > 1
      preload_app!
    when "development"
      worker_timeout 3600
    end

    port ENV.fetch("PORT", 3000)
    plugin :tmp_restart
    pidfile ENV["PIDFILE"] if ENV["PIDFILE"]
  RUBY

  ENV_APP = "run ->(env) { [200, {}, [ENV[\"RACK_ENV\"].to_s]] }\n"

  # Variables these configs (or Catamount's defaults) read: unset unless a test sets them, so
  # the outer environment cannot change what a test sees.
  QUIET_ENV = %w[
    PORT PIDFILE RAILS_ENV RACK_ENV APP_ENV RAILS_MAX_THREADS RAILS_MIN_THREADS WEB_CONCURRENCY
    MIN_THREADS MAX_THREADS PUMA_MIN_THREADS PUMA_MAX_THREADS PUMA_LOG_CONFIG PUMA_PERSISTENT_TIMEOUT
  ].to_h { |name| [name, nil] }.freeze

  # `run_in` with PORT set to a free port, booted. Another test may bind that port between the
  # check and the boot: the boot then fails with "address already in use" and is tried again on
  # another port (a few times at most).
  def run_on_free_port(dir, *args, env: {})
    attempts = 3
    attempts.times do |attempt|
      port = free_port
      server = run_in(dir, *args, env: env.merge("PORT" => port.to_s), boot: false)
      begin
        return [server.boot!, port]
      rescue RuntimeError
        raise unless attempt < attempts - 1 && "#{server.stdout}#{server.stderr}".match?(/address already in use/i)
      end
    end
  end

  def rails_template_source
    skip "railties' config/puma.rb.tt is not installed (Debian package ruby-railties)" unless RAILS_TEMPLATE
    source = File.read(RAILS_TEMPLATE)
    return source unless source.include?("<%")

    require "erb"
    ERB.new(source, trim_mode: "-").result(binding)
  end

  # A fresh app directory: config/puma.rb, config.ru, tmp/pids (as `rails new` leaves it).
  def with_app(config, app: ENV_APP)
    Dir.mktmpdir do |dir|
      FileUtils.mkdir_p(["#{dir}/config", "#{dir}/tmp/pids"])
      File.write("#{dir}/config/puma.rb", config)
      File.write("#{dir}/config.ru", app)
      yield dir
    end
  end

  # `catamount` run in `dir` with no -C, no bind and no rackup path (only `args`, if any).
  def run_in(dir, *args, env: {}, boot: true)
    launch(args, env: QUIET_ENV.merge(env), chdir: dir, boot: boot)
  end

  def assert_serves(port, body)
    response = get(port, "/")
    assert_equal 200, response.status
    assert_equal body, response.body
  end

  def assert_listens_on_all_interfaces(server, port)
    assert_match %r{^(\[\d+\] )?\* Listening on http://0\.0\.0\.0:#{port}$}, server.stdout
  end

  # --- Rails 6.1: the generated file, read from railties -------------------------------------

  def test_rails_61_generated_config_in_development
    source = rails_template_source
    with_app(source) do |dir|
      server, port = run_on_free_port(dir, env: { "RAILS_MAX_THREADS" => "4", "RAILS_ENV" => "development" })
      assert_match(/Min threads: 4$/, server.stdout)
      assert_match(/Max threads: 4$/, server.stdout)
      assert_match(/Environment: development$/, server.stdout)
      assert_listens_on_all_interfaces(server, port)
      assert_serves(port, "development")
      pid = wait_for_file("#{dir}/tmp/pids/server.pid")
      assert_equal server.pid.to_s, pid&.strip, "tmp/pids/server.pid"
      # plugin :tmp_restart and worker_timeout 3600 (development) are accepted quietly.
      assert_equal "", server.stderr
    end
  end

  def test_rails_61_generated_config_in_production_with_pidfile
    source = rails_template_source
    with_app(source) do |dir|
      pidfile = File.join(dir, "custom.pid")
      server, port = run_on_free_port(dir, env: { "RAILS_MAX_THREADS" => "4", "RAILS_ENV" => "production",
                                                  "PIDFILE" => pidfile })
      assert_match(/Max threads: 4$/, server.stdout)
      assert_match(/Environment: production$/, server.stdout)
      assert_listens_on_all_interfaces(server, port)
      assert_serves(port, "production")
      assert_equal server.pid.to_s, wait_for_file(pidfile)&.strip, "PIDFILE"
      refute File.exist?("#{dir}/tmp/pids/server.pid"), "PIDFILE replaces the default path"
      assert_equal "", server.stderr
    end
  end

  # --- Rails 7.2 / 8 shape ---------------------------------------------------------------------

  def test_modern_config_in_development
    with_app(MODERN_CONFIG) do |dir|
      server, port = run_on_free_port(dir)
      assert_match(/Min threads: 3$/, server.stdout)
      assert_match(/Max threads: 3$/, server.stdout)
      assert_match(/Environment: development$/, server.stdout)
      assert_listens_on_all_interfaces(server, port)
      assert_serves(port, "development")
      refute File.exist?("#{dir}/tmp/pids/server.pid"), "no pidfile unless PIDFILE is set"
      assert_equal "", server.stderr
    end
  end

  def test_modern_config_in_production_single_mode_accepts_preload_app
    with_app(MODERN_CONFIG) do |dir|
      pidfile = File.join(dir, "server.pid")
      # No WEB_CONCURRENCY: the file computes one worker, so calls no `workers`; single mode.
      server, port = run_on_free_port(dir, env: { "RAILS_ENV" => "production", "PIDFILE" => pidfile })
      assert_match(/starting in single mode/, server.stdout)
      assert_match(/Max threads: 3$/, server.stdout)
      assert_match(/Environment: production$/, server.stdout)
      assert_listens_on_all_interfaces(server, port)
      assert_serves(port, "production")
      assert_equal server.pid.to_s, wait_for_file(pidfile)&.strip
      assert_equal "", server.stderr
    end
  end

  # WEB_CONCURRENCY is also the default worker count (as in Puma, where WEB_CONCURRENCY=1 starts
  # a one-worker cluster even though the file skips `workers 1`): production boots a cluster,
  # preloaded, serving on PORT.
  def test_modern_config_in_production_with_workers_boots_a_cluster
    with_app(MODERN_CONFIG) do |dir|
      { "2" => 2, "1" => 1 }.each do |concurrency, workers|
        server, port = run_on_free_port(dir, env: { "RAILS_ENV" => "production", "WEB_CONCURRENCY" => concurrency })
        assert_match(/Catamount starting in cluster mode/, server.stdout)
        assert_match(/Workers: #{workers}$/, server.stdout)
        assert_match(/Preload: yes$/, server.stdout) if workers > 1
        server.wait_for(/Worker #{workers - 1} \(PID: \d+\) booted/)
        assert_serves(port, "production")
        refute_includes server.stderr, "panicked"
        server.signal("INT")
        assert_equal 0, server.wait_exit.exitstatus
      end
    end
  end

  # --- The Puma shim and the real puma gem -----------------------------------------------------

  def skip_unless_puma_gem
    return if Gem::Specification.find_all_by_name("puma").any?

    skip "the puma gem is not installed here (Debian package ruby-puma), so there is no real Puma to clash with"
  end

  # A third-party plugin as a Puma plugin gem ships it: puma/plugin/marker.rb on an -I dir.
  def with_marker_plugin
    Dir.mktmpdir do |lib|
      FileUtils.mkdir_p("#{lib}/puma/plugin")
      File.write("#{lib}/puma/plugin/marker.rb", <<~RUBY)
        Puma::Plugin.create do
          def config(dsl)
            dsl.tag "marker-plugin"
          end
        end
      RUBY
      yield lib
    end
  end

  CLASH = /already initialized constant|previous definition of|superclass mismatch|method redefined/.freeze

  def test_real_puma_required_by_the_config_file_first
    skip_unless_puma_gem
    with_app(<<~RUBY, app: "run ->(env) { [200, {}, [Puma::Const::PUMA_VERSION]] }\n") do |dir|
      require "puma"
      plugin :tmp_restart
      port ENV.fetch("PORT")
    RUBY
      server, port = run_on_free_port(dir)
      response = get(port, "/")
      assert_equal 200, response.status
      assert_match(/\A\d+\.\d+\.\d+\z/, response.body, "the real gem's version")
      refute_match CLASH, server.stderr
    end
  end

  # With the real gem already loaded, a third-party plugin file still finds `Puma::Plugin`, as
  # under Puma (whose configuration loads puma/plugin before any plugin file).
  def test_third_party_plugin_after_real_puma_required_by_the_config_file
    skip_unless_puma_gem
    with_marker_plugin do |lib|
      with_app("require 'puma'\nplugin :marker\nport ENV.fetch('PORT')\n") do |dir|
        server, port = run_on_free_port(dir, "-I", lib)
        assert_serves(port, "development")
        assert_match(/marker-plugin/, File.read("/proc/#{server.pid}/cmdline"), "the plugin's config ran")
        refute_match CLASH, server.stderr
      end
    end
  end

  def test_real_puma_required_by_the_app_after_the_shim
    skip_unless_puma_gem
    app = <<~RUBY
      require "puma"
      require "puma/plugin"
      run ->(env) { [200, {}, ["\#{Puma::Const::PUMA_VERSION} \#{Puma::Plugin.name}"]] }
    RUBY
    with_marker_plugin do |lib|
      # Loading the marker plugin installs the shim (no Puma is defined yet at that point).
      with_app("plugin :marker\nport ENV.fetch('PORT')\n", app: app) do |dir|
        server, port = run_on_free_port(dir, "-I", lib)
        response = get(port, "/")
        assert_equal 200, response.status
        assert_match(/\A\d+\.\d+\.\d+ Puma::Plugin\z/, response.body)
        assert_match(/marker-plugin/, File.read("/proc/#{server.pid}/cmdline"), "the plugin's config ran")
        refute_match CLASH, server.stderr
      end
    end
  end

  # Rails apps often load the gem themselves (`gem "puma"` in the Gemfile, then Bundler.require).
  # Loading it after the shim must not take `Puma.stats_hash` / `Puma.stats` away from the app and
  # its plugins: they still answer with this server's numbers.
  def test_puma_stats_still_answer_after_the_app_requires_the_real_gem
    skip_unless_puma_gem
    app = <<~RUBY
      require "json"
      require "puma"
      run ->(env) { [200, {}, ["\#{Puma.stats_hash[:max_threads]} \#{JSON.parse(Puma.stats)['max_threads']}"]] }
    RUBY
    with_marker_plugin do |lib|
      with_app("plugin :marker\nthreads 2, 2\nport ENV.fetch('PORT')\n", app: app) do |dir|
        server, port = run_on_free_port(dir, "-I", lib)
        response = get(port, "/")
        assert_equal 200, response.status, server.stderr
        assert_equal "2 2", response.body
      end
    end
  end
end
