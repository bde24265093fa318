# frozen_string_literal: true

module Catamount
  # What every role of a boot shares (the single-mode runner, the cluster master, a worker):
  # the configuration, the output streams and the log lines written to them, the hooks, the
  # sockets handed over by a previous process, the command to restart with, and the launcher
  # that plugins and hooks are given. Each role keeps the server it binds or is given.
  class Context
    attr_reader :out, :err, :restart, :launcher, :error_log
    attr_accessor :config, :inherited
    attr_writer :debug, :silent
    # Whether this is a cluster's process (log_prefix): set by the launcher once it knows.
    attr_writer :cluster

    def initialize(launcher, argv, out:, err:)
      @launcher = launcher
      @out = out
      @err = err
      @silent = false
      @debug = false
      @cluster = false
      @restart = Restart.new(self, argv)
      @error_log = ErrorLog.new(self)
    end

    # How long a process about to `exec` or `exit!` waits for its queued log lines.
    LOG_FLUSH_SECONDS = 1

    # Writes `line` to `err`: through the server's log queue when `err` is this process's stderr
    # and a server runs (so it neither waits for a stuck reader, holding the GVL, nor overtakes
    # lines queued before it), else directly.
    def self.write_error(err, line)
      err.puts(line) unless err.equal?(STDERR) && Native.log_line(2, "#{line}\n")
    end

    # What `err.puts(line)` callers (hooks, timers) are given instead of stderr: `error`.
    ErrorLog = Struct.new(:context) do
      def puts(line)
        context.error(line)
      end
    end

    # Lines already queued get a moment to go out, then the process ends at once (`exit!`:
    # no at_exit hooks, which would run in a copy of another process).
    def exit_now!(status)
      Native.log_flush(LOG_FLUSH_SECONDS)
      exit!(status)
    end

    def options
      @config.options
    end

    # In a cluster, every line starts with the pid of the process (master or worker) writing
    # it, as Puma's do.
    def log_prefix
      "[#{Process.pid}] " if @cluster
    end

    # An informational line (silenced by `silent`, shaped by `log_formatter`, sent to
    # `custom_logger` when there is one).
    def log(line)
      return if @silent

      line = "#{log_prefix}#{line}" if @cluster
      line = @config.log_formatter.call(line).to_s if @config&.log_formatter
      if (logger = @config&.custom_logger) && logger.respond_to?(:write)
        logger.write("#{line}\n")
      elsif !(@out.equal?(STDOUT) && Native.log_line(1, "#{line}\n")) # the server's log queue
        @out.puts(line)
      end
    end

    # A `- ` line shown only with `debug` / `--debug`.
    def debug(line)
      log("- #{line}") if @debug
    end

    def error(line)
      Context.write_error(@err, line)
    end

    # Runs the configuration's hooks called `name`; a failing hook is reported on stderr.
    def run_hooks(name, *args, keyed: nil)
      @config.run_hooks(name, *args, log: @error_log, keyed: keyed)
    end

    # Plugins' `start(launcher)`, once the server (or the master) runs.
    def start_plugins
      @config.plugins.each do |plugin|
        plugin.start(@launcher) if plugin.respond_to?(:start)
      rescue StandardError => e
        error "catamount: plugin #{plugin.class.name} failed to start: #{e.message} (#{e.class})"
      end
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
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

    # Whether stdout or stderr goes to a file (HUP then reopens it rather than stopping).
    def logs_redirected?(options)
      options[:redirect_stdout] || options[:redirect_stderr] ? true : false
    end

    # HUP with redirected logs: reopen them (true), else false (HUP then means stop).
    def reopen_logs(options)
      return false unless logs_redirected?(options)

      redirect_stdio(options, reopen: true)
      true
    end

    # `shutdown_debug` and PWR: every thread's backtrace, on stderr.
    def backtraces
      Thread.list.each do |thread|
        error "Thread #{thread.inspect}"
        (thread.backtrace || []).each { |line| error "  #{line}" }
      end
    end

    # PWR (Linux's stand-in for BSD's INFO; Puma 8 uses it too): every thread's backtrace on
    # stderr, without stopping anything. `handler` replaces the thread that prints them.
    def trap_backtrace_signal(&handler)
      handler ||= -> { Thread.new { backtraces } }
      sig = %w[INFO PWR].find { |name| Signal.list.key?(name) }
      Signal.trap(sig) { handler.call } if sig
    end

    # USR2 (hot restart) and USR1, unless PUMA_SKIP_SIGUSR2 (Puma 6.6+) leaves USR2 alone.
    def restart_signals
      ENV.key?("PUMA_SKIP_SIGUSR2") ? %w[USR1] : %w[USR1 USR2]
    end

    def self.iso8601(time)
      time&.utc&.strftime("%Y-%m-%dT%H:%M:%SZ")
    end

    # The `versions` entry of stats (Puma 8's shape, with Catamount's version).
    def self.versions
      { catamount: VERSION, ruby: { engine: RUBY_ENGINE, version: RUBY_VERSION, patchlevel: RUBY_PATCHLEVEL } }
    end

    # `{ 5/5 threads, 4 available, 0 backlog }`, from a pool's stats (as in Puma's STATUS).
    def self.pool_summary(stats)
      "{ #{stats[:running].to_i}/#{stats[:max_threads].to_i} threads, #{stats[:pool_capacity].to_i} available, " \
        "#{stats[:backlog].to_i} backlog }"
    end
  end
end
