# frozen_string_literal: true

module Catamount
  # The entry point: parses a command line, loads the configuration, and hands the boot to
  # the role the configuration asks for: `Single` (single.rb), `Cluster::Master`
  # (cluster/master.rb), or, in a process a master started afresh, `Cluster::Worker`
  # (cluster/worker.rb). Returns the exit status. Every boot failure is one line on stderr
  # naming what is wrong, and a non-zero exit.
  #
  # It is also what plugins get as `launcher` in `start(launcher)`: `log`, `debug`, `events`,
  # `options`, `config`, `stats`, `every`, `restart`... work as Puma plugins expect; what
  # depends on the mode is asked of the current role.
  class Launcher
    # Exit statuses.
    OK = 0
    FAILED = 1

    # A boot by a Rack handler (rack_handler.rb): its app (which wins over a config file's, as
    # in Puma), its plan, and the command that started the process (a hot restart reruns it).
    Handled = Struct.new(:app, :plan, :command)

    def initialize(argv, out: $stdout, err: $stderr, handler: nil)
      @argv = argv.dup
      @handler = handler
      # A handled boot's flags are not the process's command line: a restart must not add them.
      @context = Context.new(self, handler ? [] : argv, out: out, err: err)
      @context.restart.whole_command = handler.command if handler
      @role = nil
    end

    def config
      @context.config
    end

    def run
      cli = Native.parse_cli(@argv)
      return usage if cli == :help
      return version if cli == :version

      status = boot(cli)
      end_by_sigterm if @role&.end_by_sigterm?
      status
    rescue UsageError, ConfigError, ListenError => e
      fail_with(e.message)
    end

    # An informational line (silenced by `silent`, shaped by `log_formatter`, sent to
    # `custom_logger` when there is one).
    def log(line)
      @context.log(line)
    end

    # A `- ` line shown only with `debug` / `--debug`.
    def debug(line)
      @context.debug(line)
    end

    def error(line)
      @context.error(line)
    end

    # Puma plugins call `launcher.log_writer.log` / `.debug` / `.error`, and
    # `launcher.events.on_booted { }` and friends.
    def log_writer
      self
    end

    def events
      @events ||= Events.new(@context.config)
    end

    def options
      @context.options
    end

    # Puma's stats: a cluster master's are the cluster's (each worker's from its latest ping).
    def stats(reset_max: false)
      @role ? @role.stats(reset_max: reset_max) : {}
    end

    # One line about the pool(s), for systemd's STATUS.
    def status_line
      "Catamount #{VERSION}: #{@role&.status_line}"
    end

    # For plugins, as Puma's launcher: ask for a hot restart (USR2), a phased restart (USR1)
    # or a graceful stop. Safe from any thread; acted on by the main loop.
    def restart
      @role&.request("USR2")
    end

    def phased_restart
      @role&.request("USR1")
    end

    def stop
      @role&.request("INT")
    end

    # Runs the block every `interval` seconds until it returns `:done` (Timers): on the role's
    # terms (a master runs timers on its loop), on a thread of its own before any role runs.
    def every(interval, &block)
      return Timers.thread(interval, @context.error_log, block) unless @role

      @role.every(interval, block)
    end

    # A process forked from the role's process (a cluster worker) runs as `role` from now on.
    def take_over(role)
      @role = role
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

    def usage
      @context.out.write(Native::USAGE)
      OK
    end

    def version
      @context.out.puts "catamount version #{VERSION}"
      OK
    end

    def fail_with(message)
      @context.err.puts "catamount: #{message}"
      FAILED
    end

    # Everything every mode does first (configuration, stdio, directory), then the role.
    def boot(cli)
      ctx = @context
      # A worker 0 the master started afresh: the master's signals (HUP to reopen logs, a
      # process-group USR1) must not end it while it boots.
      fresh_worker = ENV.key?(Cluster::Pipes::FRESH_WORKER_VAR)
      if fresh_worker
        Cluster::Worker.ignore_master_signals
        Signal.trap("HUP", "IGNORE")
      end
      ctx.inherited = ctx.restart.take_inherited_sockets
      # As given (like Puma): a relative -I path resolves against --dir.
      $LOAD_PATH.unshift(*cli.includes)
      config = ctx.config = Configuration.load(cli, handled: @handler&.plan)
      config.app = @handler.app if @handler
      Catamount.config = config
      options = config.options
      ctx.silent = options[:silent]
      ctx.debug = options[:debug] || ENV.key?("PUMA_DEBUG")
      if (what = config.native.not_supported_yet)
        return fail_with("#{what} is not supported yet")
      end
      ctx.restart.prune_bundler(options) if config.cluster? && options[:prune_bundler] && !options[:preload_app]

      ctx.redirect_stdio(options)
      # Log lines must reach pipes and files as they happen (Puma's default, too).
      $stdout.sync = $stderr.sync = true if options[:mutate_stdout_and_stderr_to_sync_on_write]
      change_directory(options[:directory]) if options[:directory]
      ENV["RACK_ENV"] = options[:environment]
      log_configuration if ENV.key?("PUMA_LOG_CONFIG")
      # From here on, a cluster's processes start their lines with their pid.
      ctx.cluster = fresh_worker || config.cluster?
      return Cluster::Worker.run_fresh_worker_0(ctx, options) if fresh_worker

      enable_systemd_plugin
      @role = config.cluster? ? Cluster::Master.new(ctx) : Single.new(ctx)
      @role.run(options)
    end

    # Under systemd (`NOTIFY_SOCKET` set) the systemd plugin is on without being asked for, as
    # in Puma 6+; `PUMA_SKIP_SYSTEMD` turns that off.
    def enable_systemd_plugin
      return unless ENV["NOTIFY_SOCKET"] && !ENV.key?("PUMA_SKIP_SYSTEMD")

      require "catamount/plugins/systemd"
      plugins = @context.config.plugins
      plugins << Plugins::Systemd.new unless plugins.any?(Plugins::Systemd)
    end

    def change_directory(dir)
      Dir.chdir(dir)
    rescue SystemCallError => e
      raise UsageError, "--dir #{dir}: #{e.message.sub(/ @ .*/, '')}"
    end

    def log_configuration
      log "Configuration:"
      @context.options.sort_by { |k, _| k.to_s }.each { |k, v| log "- #{k}: #{v.inspect}" }
    end

    # After a TERM stop and every cleanup (pidfile, sockets), end the way Puma's process does:
    # killed by SIGTERM, so a supervisor sees the signal it sent.
    def end_by_sigterm
      @context.out.flush
      # Under a Rack handler the command's own cleanup (`ensure`, `at_exit`: its pid file) runs
      # first; Ruby then ends the process by the signal all the same.
      raise SignalException, "TERM" if @handler

      Signal.trap("TERM", "DEFAULT")
      Process.kill("TERM", Process.pid)
      sleep 5 # the signal is delivered at once; this only keeps the caller from running on
    end
  end
end
