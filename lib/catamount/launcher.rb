# frozen_string_literal: true

module Catamount
  # Boots a server from a command line, runs it until a signal stops it, and returns the exit
  # status. Every boot failure is one line on stderr naming what is wrong, and a non-zero exit.
  #
  # It is also what plugins get as `launcher` in `start(launcher)`: `log`, `debug`, `events`,
  # `options`, `config` and `stats` work as Puma plugins expect.
  class Launcher
    # Exit statuses.
    OK = 0
    FAILED = 1

    attr_reader :config

    def initialize(argv, out: $stdout, err: $stderr)
      @argv = argv.dup
      @out = out
      @err = err
      @silent = false
      @debug = false
      @server = nil
      remember_command(argv)
    end

    def run
      cli = Native.parse_cli(@argv)
      return usage if cli == :help
      return version if cli == :version

      status = boot(cli)
      end_by_sigterm if @end_by_sigterm
      status
    rescue UsageError, ConfigError, ListenError => e
      fail_with(e.message)
    end

    # An informational line (silenced by `silent`, shaped by `log_formatter`, sent to
    # `custom_logger` when there is one).
    def log(line)
      return if @silent

      line = "#{@log_prefix}#{line}" if @log_prefix
      line = @config.log_formatter.call(line).to_s if @config&.log_formatter
      if (logger = @config&.custom_logger) && logger.respond_to?(:write)
        logger.write("#{line}\n")
      else
        @out.puts(line)
      end
    end

    # A `- ` line shown only with `debug` / `--debug`.
    def debug(line)
      log("- #{line}") if @debug
    end

    def error(line)
      @err.puts(line)
    end

    # Puma plugins call `launcher.log_writer.log` / `.debug` / `.error`, and
    # `launcher.events.on_booted { }` and friends.
    def log_writer
      self
    end

    def events
      @events ||= Events.new(@config)
    end

    def options
      @config.options
    end

    # Puma's stats: a cluster master's are the cluster's (each worker's from its latest ping).
    def stats
      return cluster_stats if cluster_master?
      return {} unless @server && @started_at

      @server.stats.merge(started_at: iso8601(@started_at))
    end

    # One line about the pool(s), for systemd's STATUS.
    def status_line
      "Catamount #{VERSION}: #{cluster_master? ? cluster_status_line : "worker: #{pool_summary(stats)}"}"
    end

    # For plugins, as Puma's launcher: ask for a hot restart (USR2), a phased restart (USR1)
    # or a graceful stop. Safe from any thread; acted on by the main loop.
    def restart
      @request&.call("USR2")
    end

    def phased_restart
      @request&.call("USR1")
    end

    def stop
      @request&.call("INT")
    end

    # Runs the block every `interval` seconds until it returns `:done`. In single mode on its
    # own thread; in a cluster master on the master's loop, because the master keeps a single
    # thread so that every fork copies just that one. An error is reported and ends the timer.
    def every(interval, &block)
      timer = Timer.new(interval, monotonic_now + interval, block)
      return @timers << timer if @timers

      Thread.new do
        loop do
          sleep interval
          break if run_timer(timer) == :done
        end
      end
    end

    Timer = Struct.new(:interval, :due, :block)

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

    # Lets plugins add lifecycle hooks at run time, under Puma's event names.
    class Events
      def initialize(config)
        @config = config
      end

      { on_booted: :after_booted, after_booted: :after_booted, on_stopped: :after_stopped,
        after_stopped: :after_stopped, on_restart: :before_restart,
        before_restart: :before_restart }.each do |event, hook|
        define_method(event) do |&block|
          @config.add_hook(hook, block, key: nil, where: "plugin")
        end
      end
    end

    private

    def monotonic_now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def iso8601(time)
      time&.utc&.strftime("%Y-%m-%dT%H:%M:%SZ")
    end

    # `{ 5/5 threads, 4 available, 0 backlog }`, from a pool's stats (as in Puma's STATUS).
    def pool_summary(stats)
      "{ #{stats[:running].to_i}/#{stats[:max_threads].to_i} threads, #{stats[:pool_capacity].to_i} available, " \
        "#{stats[:backlog].to_i} backlog }"
    end

    def run_timer(timer)
      timer.block.call
    rescue StandardError => e
      @err.puts "catamount: timer #{timer.block.source_location&.join(':')} failed: #{e.message} (#{e.class})"
      :done
    end

    # Cluster master: runs the timers that are due; returns when the next one is (or nil).
    def run_due_timers
      now = monotonic_now
      @timers.reject! do |timer|
        next false if timer.due > now

        timer.due = now + timer.interval
        run_timer(timer) == :done
      end
      @timers.map(&:due).min
    end

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
      # A worker 0 the master started afresh: the master's signals (HUP to reopen logs, a
      # process-group USR1) must not end it while it boots.
      fresh_worker = ENV.key?(Cluster::FRESH_WORKER_VAR)
      if fresh_worker
        ignore_master_signals
        Signal.trap("HUP", "IGNORE")
      end
      @inherited = take_inherited_sockets
      # As given (like Puma): a relative -I path resolves against --dir.
      $LOAD_PATH.unshift(*cli.includes)
      @config = Configuration.load(cli)
      Catamount.config = @config
      options = @config.options
      @silent = options[:silent]
      @debug = options[:debug] || ENV.key?("PUMA_DEBUG")
      if (what = @config.native.not_supported_yet)
        return fail_with("#{what} is not supported yet")
      end
      prune_bundler(options) if @config.cluster? && options[:prune_bundler] && !options[:preload_app]

      redirect_stdio(options)
      # Log lines must reach pipes and files as they happen (Puma's default, too).
      $stdout.sync = $stderr.sync = true if options[:mutate_stdout_and_stderr_to_sync_on_write]
      change_directory(options[:directory]) if options[:directory]
      ENV["RACK_ENV"] = options[:environment]
      log_configuration if ENV.key?("PUMA_LOG_CONFIG")
      return run_fresh_worker_0(options) if fresh_worker

      enable_systemd_plugin
      return run_cluster(options) if @config.cluster?

      app = prepare_app(options)
      return FAILED unless app

      @server = Native::Server.new(@config.native, rack_settings(options))
      signals = trap_signals
      write_pidfile(options[:pidfile])
      write_state(options)
      banner(options, @server)
      warn_about_idle_hooks
      Catamount.launcher = self
      begin
        serve(@server, app, options, signals)
      ensure
        @server.unlink_unix_sockets
        remove_pidfile(options[:pidfile])
      end
    end

    # Under systemd (`NOTIFY_SOCKET` set) the systemd plugin is on without being asked for, as
    # in Puma 6+; `PUMA_SKIP_SYSTEMD` turns that off.
    def enable_systemd_plugin
      return unless ENV["NOTIFY_SOCKET"] && !ENV.key?("PUMA_SKIP_SYSTEMD")

      require "catamount/plugins/systemd"
      @config.plugins << Plugins::Systemd.new unless @config.plugins.any?(Plugins::Systemd)
    end

    # The app, loaded and wrapped as configured; nil (after the error is printed) if it failed.
    def prepare_app(options)
      app = @config.app || load_rackup(options[:rackup])
      return unless app

      app = FiberPerRequest.new(app) if options[:fiber_per_request]
      # The app may have loaded the real puma gem (Gemfile + Bundler.require): its `Puma.stats`
      # then reads Catamount's numbers.
      PumaCompat.attach_stats
      app
    end

    def load_rackup(rackup)
      raise ConfigError, "rackup file #{rackup} not found (in #{Dir.pwd})" unless File.file?(rackup)
      raise ConfigError, "rackup file #{rackup} is not readable" unless File.readable?(rackup)

      load_app(rackup)
    end

    def change_directory(dir)
      Dir.chdir(dir)
    rescue SystemCallError => e
      raise UsageError, "--dir #{dir}: #{e.message.sub(/ @ .*/, '')}"
    end

    # `stdout_redirect` / `--redirect-stdout`: reopen fd 1 and 2 (so the native side's lines go
    # there too). Also called on HUP, to let logrotate move the files away.
    def redirect_stdio(options, reopen: false)
      mode = options[:redirect_append] || reopen ? "a" : "w"
      { redirect_stdout: $stdout, redirect_stderr: $stderr }.each do |key, io|
        next unless (path = options[key])

        begin
          io.reopen(path, mode)
        rescue SystemCallError => e
          raise UsageError, "cannot open #{path} for #{key == :redirect_stdout ? 'stdout' : 'stderr'}: #{e.message.sub(/ @ .*/, '')}"
        end
        io.sync = true
      end
      @out.puts "=== catamount startup: #{Time.now} ===" if options[:redirect_stdout] && !reopen
    end

    def log_configuration
      log "Configuration:"
      @config.options.sort_by { |k, _| k.to_s }.each { |k, v| log "- #{k}: #{v.inspect}" }
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
      require "rack"
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
        multiprocess: @config.cluster?,
        lowlevel_error_handler: @config.lowlevel_error_handler,
        access_logger: @config.custom_logger,
        out_of_band: out_of_band_hook,
        inherited: @inherited
      }
    end

    # One callable running every `out_of_band` hook, or nil.
    def out_of_band_hook
      return if @config.hooks[:out_of_band].empty?

      config = @config
      err = @err
      -> { config.run_hooks(:out_of_band, log: err) }
    end

    def banner(options, server, cluster: nil)
      log "Catamount starting in #{cluster ? 'cluster' : 'single'} mode..."
      log "* Catamount version: #{VERSION} (\"#{CODENAME}\")"
      log "* Ruby version: #{RUBY_DESCRIPTION}"
      log "*  Min threads: #{options[:min_threads]}"
      log "*  Max threads: #{options[:max_threads]}"
      log "*  Environment: #{options[:environment]}"
      if cluster
        log "*   Master PID: #{Process.pid}"
        log "*      Workers: #{options[:workers]}"
        log "*     Preload: #{cluster[:preload] ? 'yes' : 'no'}"
        mark = ->(yes) { yes ? "\u2714" : "\u2716" }
        log "*    Restarts: (#{mark[true]}) hot (#{mark[true]}) phased (#{mark[options[:fork_worker]]}) refork"
      else
        log "*          PID: #{Process.pid}"
      end
      inherited = server.inherited
      server.listening.each { |l| log "* Listening on #{l}#{' (inherited)' if inherited.include?(l)}" }
      log "Use Ctrl-C to stop"
      @out.flush
      tag = options[:tag] || File.basename(Dir.pwd)
      title = "catamount #{VERSION} (#{server.listening.join(',')})"
      title += " [#{tag}]" unless tag.empty?
      Process.setproctitle(title)
    end

    def warn_about_idle_hooks
      return if @config.options[:silence_fork_callback_warning]

      @config.idle_cluster_hooks.each do |name|
        @err.puts "Warning: #{name} is a cluster-mode hook and this server runs in single mode " \
                  "(workers 0), so it will not run. (silence_fork_callback_warning hides this.)"
      end
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

    # The state file `pumactl -S` reads: YAML with the pid and where the server runs from.
    def write_state(options)
      return unless (path = options[:state])

      File.write(path, "---\npid: #{Process.pid}\nrunning_from: #{Dir.pwd.inspect}\n")
      File.chmod(options[:state_permission], path) if options[:state_permission]
    rescue SystemCallError => e
      raise UsageError, "cannot write state file #{path}: #{e.message.sub(/ @ .*/, '')}"
    end

    # The signals `serve` acts on, queued from now on: trapped before the pidfile and the boot
    # lines exist, so a supervisor that signals as soon as it sees either is never too early.
    def trap_signals
      signals = Queue.new
      %w[TERM INT HUP].each { |sig| Signal.trap(sig) { signals << sig } }
      restart_signals.each { |sig| Signal.trap(sig) { signals << sig } }
      trap_backtrace_signal
      @request = ->(what) { signals << what }
      signals
    end

    # Runs until TERM, INT or HUP (without redirected logs): the first one stops gracefully
    # (in-flight requests finish); a second INT, or `force_shutdown_after` running out, ends the
    # process at once. After a TERM the process ends by SIGTERM, as Puma's does, unless
    # `raise_exception_on_sigterm false`. USR2 (and USR1: one process has no phases) stops the
    # same way but keeps the listening sockets, then execs the same command (Restart).
    def serve(server, app, options, signals)
      server.start
      @started_at = Time.now.utc
      pool = start_pool(server, app)
      # `ensure`: the main thread is woken even when the wait ends by an exception.
      Thread.new do
        server.wait
      ensure
        signals << :finished
      end
      watch_idle(server, options[:idle_timeout], signals) if options[:idle_timeout]
      @config.plugins.each { |plugin| start_plugin(plugin) }
      @config.run_hooks(:after_booted, log: @err)
      stopping = nil
      loop do
        case (event = signals.pop)
        when :finished
          break
        when :force
          backtraces if options[:shutdown_debug]
          return exec_restart(options, server) if stopping == "restart"

          halt
        when "HUP"
          if options[:redirect_stdout] || options[:redirect_stderr]
            redirect_stdio(options, reopen: true)
            next
          end
          stopping ||= begin_stop(server, options, signals, "HUP")
        when :idle
          log "- Idle timeout reached, stopping"
          stopping ||= begin_stop(server, options, signals, "idle")
        when "USR1", "USR2"
          next if stopping

          log "* phased-restart called but not available, restarting normally." if event == "USR1"
          log "* Restarting..."
          stopping = begin_stop(server, options, signals, "restart")
        else
          halt if stopping && event == "INT"
          # A stop asked for during a restart wins: the sockets close, nothing is exec'd.
          stopping = nil if stopping == "restart"
          stopping ||= begin_stop(server, options, signals, event)
        end
      end
      pool.join
      return exec_restart(options, server) if stopping == "restart"

      log "- Goodbye!"
      @end_by_sigterm = stopping == "TERM" && options[:raise_exception_on_sigterm]
      OK
    end

    # After a TERM stop and every cleanup (pidfile, sockets), end the way Puma's process does:
    # killed by SIGTERM, so a supervisor sees the signal it sent.
    def end_by_sigterm
      @out.flush
      Signal.trap("TERM", "DEFAULT")
      Process.kill("TERM", Process.pid)
      sleep 5 # the signal is delivered at once; this only keeps the caller from running on
    end

    # PWR (Linux's stand-in for BSD's INFO; Puma 8 uses it too): every thread's backtrace on
    # stderr, without stopping anything.
    def trap_backtrace_signal(&handler)
      handler ||= -> { Thread.new { backtraces } }
      sig = backtrace_signal
      Signal.trap(sig) { handler.call } if sig
    end

    def backtrace_signal
      %w[INFO PWR].find { |name| Signal.list.key?(name) }
    end

    # USR2 (hot restart) and USR1, unless PUMA_SKIP_SIGUSR2 (Puma 6.6+) leaves USR2 alone.
    def restart_signals
      ENV.key?("PUMA_SKIP_SIGUSR2") ? %w[USR1] : %w[USR1 USR2]
    end

    def begin_stop(server, options, signals, why)
      unless why == "restart"
        @config.run_hooks(:after_stopped, log: @err)
        log "- Gracefully stopping, waiting for requests to finish"
        # New connections are refused rather than queued for a process that will never come.
        server.close_listeners
      end
      backtraces if options[:shutdown_debug] == true
      server.stop
      if (limit = options[:force_shutdown_after]).is_a?(Numeric)
        Thread.new { sleep(limit); signals << :force }
      end
      why
    end

    def halt
      log "- Stopping immediately!"
      @out.flush
      exit!(OK)
    end

    # `idle_timeout`: stop once no connection has been accepted for that long.
    def watch_idle(server, limit, signals)
      Thread.new do
        loop do
          idle = server.idle_seconds
          break signals << :idle if idle >= limit

          sleep(limit - idle)
        end
      end
    end

    # `shutdown_debug`: every thread's backtrace, on stderr.
    def backtraces
      Thread.list.each do |thread|
        @err.puts "Thread #{thread.inspect}"
        (thread.backtrace || []).each { |line| @err.puts "  #{line}" }
      end
    end

    def start_plugin(plugin)
      plugin.start(self) if plugin.respond_to?(:start)
    rescue StandardError => e
      @err.puts "catamount: plugin #{plugin.class.name} failed to start: #{e.message} (#{e.class})"
    end

    # The pool manager: starts a Ruby thread each time the native side asks for one. Each thread
    # runs the thread hooks around its life (`before_thread_exit` when it is trimmed or the
    # server stops, not when it dies by an exception).
    def start_pool(server, app)
      config = @config
      err = @err
      Thread.new do
        workers = []
        while server.next_pool_action == :spawn
          workers << Thread.new do
            config.run_hooks(:before_thread_start, log: err)
            server.run_worker(app)
            config.run_hooks(:before_thread_exit, log: err)
          end
        end
        workers.each(&:join)
      end
    end
  end
end
