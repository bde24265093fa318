# frozen_string_literal: true

module Catamount
  # The Rack app a server runs: the config file's `app`, else the rackup file loaded with
  # Rack::Builder (its errors printed with file:line), wrapped as configured; and the Rack
  # settings `Native::Server.new` builds every request's env from.
  class AppLoader
    # `fiber_per_request` (alias `clean_thread_locals`): each request runs in a fresh Fiber, so
    # fiber-local state (`Thread.current[:x]`) never leaks from one request into the next.
    class FiberPerRequest
      def initialize(app)
        @app = app
      end

      def call(env)
        Fiber.new { @app.call(env) }.resume
      end
    end

    def initialize(context)
      @context = context
    end

    # The app, loaded and wrapped as configured; nil (after the error is printed) if it failed.
    def prepare(options)
      # `Puma.stats` / `Puma.stats_hash` for apps and gems that read them (a health endpoint,
      # Barnes): the shim, unless the real gem is loaded already.
      PumaCompat.install
      app = @context.config.app || load_rackup(options[:rackup])
      return unless app

      # The fiber mode runs each request in a fiber of its own already.
      app = FiberPerRequest.new(app) if options[:fiber_per_request] && !options[:fiber_scheduler]
      warn_about_thread_keyed_connections if options[:fiber_scheduler]
      # The app may have loaded the real puma gem (Gemfile + Bundler.require): its `Puma.stats`
      # then reads Catamount's numbers.
      PumaCompat.attach_stats
      app
    end

    # Without preload a cluster master only checks that the rackup file is there; workers load it.
    def check_rackup(rackup)
      raise ConfigError, "rackup file #{rackup} not found (in #{Dir.pwd})" unless File.file?(rackup)
      raise ConfigError, "rackup file #{rackup} is not readable" unless File.readable?(rackup)
    end

    def rack_settings(options)
      require "rack"
      config = @context.config
      rack_version = defined?(Rack::VERSION) ? Rack::VERSION : nil
      release = defined?(Rack::RELEASE) ? Rack::RELEASE : Rack.release
      {
        rack_version: rack_version,
        http_version: Gem::Version.new(release) < Gem::Version.new("3.1"),
        script_name: (ENV["SCRIPT_NAME"] || "").dup.freeze,
        server_software: "Catamount #{VERSION}".freeze,
        errors: $stderr,
        null_input: NullInput::INSTANCE,
        environment: options[:environment],
        # `rack.multiprocess`: a cluster's workers all call the app.
        multiprocess: config.cluster?,
        lowlevel_error_handler: config.lowlevel_error_handler,
        access_logger: config.custom_logger,
        out_of_band: out_of_band_hook,
        inherited: @context.inherited
      }
    end

    private

    # ActiveRecord hands out one database connection per *thread* unless Rails' isolation level
    # is `:fiber` (Rails 7.0+; Rails 6.1 has no such setting). In the fiber mode a thread runs
    # many requests at once, so they would share one connection and interleave their
    # transactions. Said at boot, once the app (and so ActiveRecord's settings) is loaded.
    def warn_about_thread_keyed_connections
      return unless defined?(::ActiveRecord::Base)

      state = defined?(::ActiveSupport::IsolatedExecutionState) && ::ActiveSupport::IsolatedExecutionState
      return if state && state.isolation_level == :fiber

      fix = if state
              "set `config.active_support.isolation_level = :fiber` in the app"
            else
              "use Rails 7.0 or later with `config.active_support.isolation_level = :fiber`"
            end
      @context.err.puts "Warning: fiber_scheduler runs several requests on one thread, and ActiveRecord " \
                        "#{::ActiveRecord.version} gives every request of a thread the same database " \
                        "connection (their queries and transactions interleave): #{fix}, or turn " \
                        "fiber_scheduler off."
    end

    def load_rackup(rackup)
      check_rackup(rackup)
      load_app(rackup)
    end

    # Loads the rackup file with Rack::Builder. A config.ru that raises prints the error with
    # its file:line and stops the boot.
    def load_app(path)
      require "rack"
      require "uri" # Rack 2.2's Lint uses URI without requiring it.
      result = Rack::Builder.parse_file(path)
      result.is_a?(Array) ? result.first : result
    rescue LoadError, StandardError, ScriptError => e
      err = @context.err
      where = (e.backtrace || []).find { |l| l.include?(File.basename(path)) } || path
      err.puts "catamount: error loading #{path}: #{e.message} (#{e.class})"
      err.puts "  at #{where}"
      err.puts((e.backtrace || []).first(10).map { |l| "    #{l}" })
      nil
    end

    # One callable running every `out_of_band` hook, or nil.
    def out_of_band_hook
      context = @context
      return if context.config.hooks[:out_of_band].empty?

      -> { context.run_hooks(:out_of_band) }
    end
  end
end
