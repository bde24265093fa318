# frozen_string_literal: true

module Catamount
  # Single mode (`workers 0`): one process loads the app, binds, serves on its own reactor and
  # pool, and acts on signals on its main thread until a stop (or a hot restart's exec).
  #
  # The main thread waits on a Ruby Queue the traps feed (a main thread blocked in native code
  # would not get signals); every event that ends or changes the run arrives there: a signal,
  # `:finished` (the server ended), `:force` (`force_shutdown_after` ran out), `:idle`.
  class Single
    include Serving

    # `signals`: the queue the main thread waits on (a test hands its own).
    def initialize(context, signals: Queue.new)
      @context = context
      @signals = signals
      @server = nil
      @end_by_sigterm = false
    end

    # Boots and serves; returns the exit status (or execs on a hot restart).
    def run(options)
      ctx = @context
      loader = AppLoader.new(ctx)
      app = loader.prepare(options)
      return Launcher::FAILED unless app

      server = Native::Server.new(ctx.config.native, loader.rack_settings(options))
      @control = Control.open(ctx, options)
      trap_signals
      ProcessFiles.write(options, @control)
      Banner.print(ctx, options, server, control: @control)
      warn_about_idle_hooks
      Catamount.launcher = ctx.launcher
      ProcessFiles.removed_after(server, options, @control) { serve(server, app, options) }
    end

    # Whether the process ends by SIGTERM (a TERM stop, `raise_exception_on_sigterm`).
    def end_by_sigterm?
      @end_by_sigterm
    end

    # Plugins' `launcher.restart` & co: queued for the main thread, as the signal would be.
    def request(what)
      @signals << what
    end

    # A control server's role-dependent action (Control::AS_SIGNAL has the others): one process
    # has no refork and no worker directory to reload (Puma's 404).
    def control(command)
      log "* refork called but not available." if command == "refork"
      false
    end

    # This process's memory, for the metrics.
    def memory
      { Process.pid => Native.process_memory(Process.pid) }.compact
    end

    # Runs until TERM, INT or HUP (without redirected logs): the first one stops gracefully
    # (in-flight requests finish; streaming responses and connections the app took get
    # `drain_timeout`, drain.rb); a second INT, or `force_shutdown_after` running out, ends the
    # process at once. After a TERM the process ends by SIGTERM, as Puma's does, unless
    # `raise_exception_on_sigterm false`. USR2 (and USR1: one process has no phases) stops the
    # same way but keeps the listening sockets, then execs the same command (Restart).
    # `server`: bound, not started (`run` binds it; test/unit/test_single.rb hands a stand-in).
    def serve(server, app, options)
      @server = server
      signals = @signals
      @started_at = Time.now.utc
      pool = start_serving(app, signals)
      @control&.serve_in_thread(self)
      watch_idle(server, options[:idle_timeout]) if options[:idle_timeout]
      @context.start_plugins
      @context.run_hooks(:after_booted)
      stopping = nil
      loop do
        case (event = signals.pop)
        when :finished
          # Ended by itself (the reactor failed): no stop began, nothing to drain.
          break unless @drain

          finish_in_background(pool, signals)
        when :drained
          break
        when "halt"
          halt
        when :force
          @context.backtraces if options[:shutdown_debug]
          return @context.restart.exec(options, server, @control) if stopping == "restart"

          halt
        when "HUP"
          next if @context.reopen_logs(options)

          stopping ||= begin_stop(server, options, "HUP")
        when :idle
          log "- Idle timeout reached, stopping"
          stopping ||= begin_stop(server, options, "idle")
        when "USR1", "USR2"
          next if stopping

          log "* phased-restart called but not available, restarting normally." if event == "USR1"
          log "* Restarting..."
          stopping = begin_stop(server, options, "restart")
        else
          halt if stopping && event == "INT"
          # A stop asked for during a restart wins: the sockets close, nothing is exec'd.
          stopping = nil if stopping == "restart"
          stopping ||= begin_stop(server, options, event)
        end
      end
      pool.join
      return @context.restart.exec(options, server, @control) if stopping == "restart"

      log "- Goodbye!"
      ended_with_lost_threads(server) if options[:request_timeout]
      @end_by_sigterm = stopping == "TERM" && options[:raise_exception_on_sigterm]
      Launcher::OK
    end

    private

    def log(line)
      @context.log(line)
    end

    # The signals `serve` acts on, queued from now on: trapped before the pidfile and the boot
    # lines exist, so a supervisor that signals as soon as it sees either is never too early.
    def trap_signals
      signals = @signals
      (%w[TERM INT HUP] + @context.restart_signals).each { |sig| Signal.trap(sig) { signals << sig } }
      @context.trap_backtrace_signal
    end

    def warn_about_idle_hooks
      config = @context.config
      return if config.options[:silence_fork_callback_warning]

      config.idle_cluster_hooks.each do |name|
        @context.err.puts "Warning: #{name} is a cluster-mode hook and this server runs in single mode " \
                          "(workers 0), so it will not run. (silence_fork_callback_warning hides this.)"
      end
    end

    def begin_stop(server, options, why)
      unless why == "restart"
        @context.run_hooks(:after_stopped)
        log "- Gracefully stopping, waiting for requests to finish"
        # New connections are refused rather than queued for a process that will never come.
        server.close_listeners
      end
      @context.backtraces if options[:shutdown_debug] == true
      server.stop
      # A hot restart does not drain (drain.rb says why).
      @drain ||= Drain.start(@context, server, options[:drain_timeout], restart: why == "restart")
      if (limit = options[:force_shutdown_after]).is_a?(Numeric)
        signals = @signals
        Thread.new { sleep(limit); signals << :force }
      end
      why
    end

    # Once the server ended: the pool threads (an upgraded connection's callable may still run
    # on one) and the drain are waited for on a thread, so the loop still acts on a second INT
    # or `force_shutdown_after` meanwhile; `:drained` says they are done.
    def finish_in_background(pool, signals)
      drain = @drain
      @finishing ||= Thread.new do
        pool.join
        drain.finish
      ensure
        signals << :drained
      end
    end

    # Ruby's own exit would wait forever for a thread lost to `request_timeout` (it ignores
    # interrupts): end at once (no `at_exit` hooks), once everything else is done.
    def ended_with_lost_threads(server)
      lost = server.lost_threads.size
      return if lost.zero?

      log "- #{lost} thread(s) lost to request_timeout still running: exiting without them"
      @control&.close
      @context.exit_now!(Launcher::OK)
    end

    def halt
      log "* Stopping immediately!"
      @control&.flush
      @control&.close
      @context.out.flush
      @context.exit_now!(Launcher::OK)
    end

    # `idle_timeout`: stop once no connection has been accepted for that long.
    def watch_idle(server, limit)
      signals = @signals
      Thread.new do
        loop do
          idle = server.idle_seconds
          break signals << :idle if idle >= limit

          sleep(limit - idle)
        end
      end
    end
  end
end
