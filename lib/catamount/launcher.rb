# frozen_string_literal: true

module Catamount
  # Boots a server from a command line, runs it until a signal stops it, and returns the exit
  # status. Every boot failure is one line on stderr naming what is wrong, and a non-zero exit.
  class Launcher
    # Exit statuses.
    OK = 0
    FAILED = 1

    def initialize(argv, out: $stdout, err: $stderr)
      @argv = argv.dup
      @out = out
      @err = err
      @silent = false
    end

    def run
      cli = Native.parse_cli(@argv)
      return usage if cli == :help
      return version if cli == :version

      boot(cli)
    rescue UsageError, ConfigError, ListenError => e
      fail_with(e.message)
    end

    private

    def usage
      @out.write(Native::USAGE)
      OK
    end

    def version
      @out.puts "catamount version #{VERSION}"
      OK
    end

    def fail_with(message)
      @err.puts "catamount: #{message}"
      FAILED
    end

    def boot(cli)
      # Log lines must reach pipes and files as they happen (Puma's default, too).
      $stdout.sync = true
      $stderr.sync = true
      # As given (like Puma): a relative -I path resolves against --dir.
      $LOAD_PATH.unshift(*cli.includes)
      options = cli.resolve(DSL.load(config_files(cli)))
      @silent = options.silent?
      change_directory(options.directory) if options.directory
      ENV["RACK_ENV"] = options.environment
      rackup = options.rackup
      return fail_with("rackup file #{rackup} not found (in #{Dir.pwd})") unless File.file?(rackup)
      return fail_with("rackup file #{rackup} is not readable") unless File.readable?(rackup)

      app = load_app(rackup)
      return FAILED unless app

      server = Native::Server.new(options, rack_settings(options))
      write_pidfile(options.pidfile)
      banner(options, server)
      begin
        serve(server, app, options)
      ensure
        remove_pidfile(options.pidfile)
      end
    end

    # `-C` files in order; else the first of config/puma/<env>.rb and config/puma.rb.
    def config_files(cli)
      return [] if cli.no_config?

      files = cli.config_files
      files.each do |f|
        raise ConfigError, "config file #{f} not found" unless File.file?(f)
      end
      return files unless files.empty?

      env = cli.environment || %w[APP_ENV RACK_ENV RAILS_ENV].map { |k| ENV[k] }.find { |v| v && !v.empty? } || "development"
      ["config/puma/#{env}.rb", "config/puma.rb"].select { |f| File.file?(f) }.first(1)
    end

    def change_directory(dir)
      Dir.chdir(dir)
    rescue SystemCallError => e
      raise UsageError, "--dir #{dir}: #{e.message.sub(/ @ .*/, '')}"
    end

    # Loads the rackup file with Rack::Builder. A config.ru that raises prints the error with
    # its file:line and stops the boot.
    def load_app(path)
      require "rack"
      require "uri" # Rack 2.2's Lint uses URI without requiring it.
      result = Rack::Builder.parse_file(path)
      result.is_a?(Array) ? result.first : result
    rescue LoadError, StandardError, ScriptError => e
      where = (e.backtrace || []).find { |l| l.include?(File.basename(path)) } || path
      @err.puts "catamount: error loading #{path}: #{e.message} (#{e.class})"
      @err.puts "  at #{where}"
      @err.puts((e.backtrace || []).first(10).map { |l| "    #{l}" })
      nil
    end

    def rack_settings(options)
      rack_version = defined?(Rack::VERSION) ? Rack::VERSION : nil
      release = defined?(Rack::RELEASE) ? Rack::RELEASE : Rack.release
      {
        rack_version: rack_version,
        http_version: Gem::Version.new(release) < Gem::Version.new("3.1"),
        script_name: (ENV["SCRIPT_NAME"] || "").dup.freeze,
        server_software: "Catamount #{VERSION}".freeze,
        errors: $stderr,
        environment: options.environment
      }
    end

    def info(line)
      @out.puts(line) unless @silent
    end

    def banner(options, server)
      info "Catamount starting in single mode..."
      info "* Catamount version: #{VERSION} (\"#{CODENAME}\")"
      info "* Ruby version: #{RUBY_DESCRIPTION}"
      info "*  Min threads: #{options.min_threads}"
      info "*  Max threads: #{options.max_threads}"
      info "*  Environment: #{options.environment}"
      info "*          PID: #{Process.pid}"
      server.listening.each { |l| info "* Listening on #{l}" }
      info "Use Ctrl-C to stop"
      @out.flush
      tag = options.tag || File.basename(Dir.pwd)
      title = "catamount #{VERSION} (#{server.listening.join(',')})"
      title += " [#{tag}]" unless tag.empty?
      Process.setproctitle(title)
    end

    # Written before the boot lines, so a pidfile that cannot be written stops the boot cleanly.
    def write_pidfile(path)
      File.write(path, "#{Process.pid}\n") if path
    rescue SystemCallError => e
      raise UsageError, "cannot write pidfile #{path}: #{e.message.sub(/ @ .*/, '')}"
    end

    # Removed only while it still names this process (a newer server may have taken it over).
    def remove_pidfile(path)
      File.delete(path) if path && File.exist?(path) && File.read(path).to_i == Process.pid
    rescue SystemCallError
      nil
    end

    # Runs until TERM or INT: the first one stops gracefully (in-flight requests finish), a
    # second INT, or `force_shutdown_after` running out, ends the process at once.
    def serve(server, app, options)
      signals = Queue.new
      %w[TERM INT].each { |sig| Signal.trap(sig) { signals << sig } }
      server.start
      pool = start_pool(server, app)
      Thread.new { server.wait; signals << :finished }
      stopping = false
      loop do
        case (event = signals.pop)
        when :finished
          break
        when :force
          info "- Stopping immediately!"
          @out.flush
          exit!(OK)
        else
          if stopping
            if event == "INT"
              info "- Stopping immediately!"
              @out.flush
              exit!(OK)
            end
            next
          end
          stopping = true
          info "- Gracefully stopping, waiting for requests to finish"
          server.stop
          if (limit = options.force_shutdown_after)
            Thread.new { sleep(limit); signals << :force }
          end
        end
      end
      pool.join
      info "- Goodbye!"
      OK
    end

    # The pool manager: starts a Ruby thread each time the native side asks for one.
    def start_pool(server, app)
      Thread.new do
        workers = []
        workers << Thread.new { server.run_worker(app) } while server.next_pool_action == :spawn
        workers.each(&:join)
      end
    end
  end
end
