# frozen_string_literal: true

module Catamount
  module Cluster
    # A worker process's life, from the fork to `exit!`: replace the master's traps, run
    # `before_worker_boot`, load the app unless preloaded, start its own reactor and pool on the
    # inherited listeners (the kernel spreads connections), report to the master (pipes.rb),
    # and on TERM let in-flight requests finish (streaming responses and connections the app
    # took get `drain_timeout`, drain.rb), run `before_worker_shutdown`, exit 0.
    #
    # The master's signals other than TERM and HUP are ignored (Signals::WORKER_IGNORED). A
    # thread blocked on the master's "alive" pipe ends the worker when the master dies. Worker
    # 0 in template mode hands its serving to `Template` (template.rb).
    class Worker
      include Serving

      # Signals meant for the master (a `pkill` may reach every process of the tree), and INT.
      def self.ignore_master_signals
        Signals::WORKER_IGNORED.each { |sig| Signal.trap(sig, "IGNORE") }
      end

      # This process is worker 0 of a running cluster (Master#spawn_fresh_worker_0): it serves
      # the handed-over listeners, loads the app itself and forks the other workers.
      def self.run_fresh_worker_0(context, options)
        master_pid, pipes, phase = Pipes.from_env
        unless pipes
          context.error "catamount: #{Pipes::FRESH_WORKER_VAR} is set but is not <master pid>,<fd>,<fd>,<fd>,<fd>,<phase>"
          return Launcher::FAILED
        end
        server = Native::Server.new(context.config.native, AppLoader.new(context).rack_settings(options))
        Catamount.launcher = context.launcher
        new(context, server: server, index: 0, master_pid: master_pid, pipes: pipes, phase: phase, template: true).run(options, nil)
      end

      # The phase of the workers worker 0 forks next (the master's fork pipe says it).
      attr_writer :sibling_phase

      # The drain of this worker's stop (drain.rb): `drain_timeout`, or none in a hot restart,
      # which the master announces on the restart pipe (also while the drain runs). Once there
      # is something to drain, the master is told (`d`): it need not wait for this process to
      # start its replacement. A worker with nothing to drain ends as its last request does, so
      # hooks keyed by index run in Puma's order (the old worker's shutdown before the new one's
      # boot). Worker 0 in template mode (Template drains through this too) keeps its slot:
      # the workers it was asked to fork are the books of that slot.
      def start_drain(options)
        pipes = @pipes
        tell = @template ? nil : -> { tell_stopping }
        @drain ||= Drain.start(@context, @server, options[:drain_timeout],
                               restart: pipes.hot_restart?, ended: -> { pipes.hot_restart? }, long_lived: tell)
      end

      def finish_drain
        @drain&.finish
      end

      # `server`: the bound server (its listeners) this worker serves; `phase`: the master's
      # phase when it was started (its process title shows it); `template`: worker 0
      # forking the others; `sibling`: forked by worker 0 rather than by the master; `master`:
      # the Master this process was forked from (nil otherwise), for the signals that reached
      # its traps here.
      def initialize(context, server:, index:, master_pid:, pipes:, phase: 0, template: false, sibling: false, master: nil)
        @context = context
        @phase = phase
        @sibling_phase = phase
        @server = server
        @index = index
        @master_pid = master_pid
        @pipes = pipes
        @template = template
        @sibling = sibling
        @master = master
      end

      # Never returns: the process ends with `exit!`, never running the master's code.
      def run(options, app)
        ctx = @context
        # Traps first: until then a signal would run the handlers of the process forked from.
        events = Queue.new
        Signal.trap("TERM") { events << :term }
        Signal.trap("HUP") { events << :hup }
        Worker.ignore_master_signals
        Signal.trap("CHLD", "DEFAULT")
        ctx.trap_backtrace_signal
        early = @master ? @master.take_early_signals : []
        events << :term if early.include?("TERM")
        events << :hup if early.include?("HUP")
        ctx.launcher.take_over(self)
        # Worker 0's connections that its app took are worker 0's, not this copy's.
        Drain.close_inherited if @sibling
        @pipes.in_worker(template: @template)
        # The master now knows this pid (and may signal it: the traps are in place).
        @pipes.forked(@index) if @sibling
        Banner.worker_title(@index, @master_pid, @phase, options)
        watch_master
        hook_data = Hash.new { |h, k| h[k] = {} }
        ctx.run_hooks(:before_worker_boot, @index, keyed: hook_data)
        app ||= AppLoader.new(ctx).prepare(options)
        ctx.exit_now!(Launcher::FAILED) unless app

        # A sibling's copy of worker 0's server is stopped: serve the same sockets afresh.
        @server.rearm if @sibling
        @server.become_worker
        @started_at = Time.now.utc
        watch_idle(options[:idle_timeout]) if options[:idle_timeout]
        if @template
          @pipes.booted(@index)
          start_pings(options)
          Template.new(ctx, self, server: @server, pipes: @pipes, options: options, app: app, hook_data: hook_data).serve(events)
        else
          pool = start_serving(app, events)
          @pipes.booted(@index)
          start_pings(options)
          serve_until_stopped(options, events)
          pool.join
          finish_drain
        end
        ctx.run_hooks(:before_worker_shutdown, @index, keyed: hook_data)
        $stdout.flush
        $stderr.flush
        ctx.exit_now!(Launcher::OK)
      rescue Exception => e # rubocop:disable Lint/RescueException -- a worker must never run the master's code after a fork
        @context.error "#{@context.log_prefix}! Unable to start worker: #{e.message} (#{e.class})"
        @context.exit_now!(Launcher::FAILED)
      end

      # The launcher's role in a worker (Serving: its own pool's stats, timers on threads):
      # restarts and stops are the master's to ask for.
      def request(_what)
        nil
      end

      # Forks worker `index` twice over: the middle process exits at once, so the worker is
      # re-parented to the master (the subreaper) and never becomes worker 0's zombie.
      def fork_sibling(index, options, app)
        ctx = @context
        ctx.run_hooks(:before_worker_fork, index)
        middle = Process.fork do
          Process.fork do
            Worker.new(ctx, server: @server, index: index, master_pid: @master_pid, pipes: @pipes, phase: @sibling_phase,
                            sibling: true).run(options, app)
          ensure
            ctx.exit_now!(Launcher::FAILED)
          end
          exit!(Launcher::OK) # the middle process: it logged nothing
        rescue SystemCallError => e
          ctx.error "#{ctx.log_prefix}! Could not fork worker #{index}: #{e.message}"
        ensure
          exit!(Launcher::FAILED) # never the app's at_exit hooks: they would run in a copy of worker 0
        end
        Process.wait(middle)
        ctx.run_hooks(:after_worker_fork, index)
      rescue SystemCallError => e
        ctx.error "#{ctx.log_prefix}! Could not fork worker #{index}: #{e.message}"
      end

      # A thread lost to `request_timeout` (Serving#watch_request_timeouts): this worker stops
      # accepting, finishes its other requests and exits; the master starts its replacement.
      def threads_lost(_count)
        @serving_events << :lost
      end

      private

      # The stop began, nothing new is accepted here, and something will be drained: the master
      # need not wait for this process to start its replacement.
      def tell_stopping
        @pipes.drained
      rescue IOError, SystemCallError
        nil
      end

      # Ends this worker as soon as the master is gone (the "alive" pipe closes).
      def watch_master
        pipes = @pipes
        context = @context
        Thread.new do
          pipes.wait_for_master_exit
          context.error "#{context.log_prefix}! Detected the master died, stopping"
          context.exit_now!(Launcher::FAILED)
        end
      end

      def serve_until_stopped(options, events)
        loop do
          case events.pop
          when :hup then @context.reopen_logs(options)
          when :lost
            @context.error "#{@context.log_prefix}! Worker #{@index}: a thread is lost to request_timeout; " \
                           "stopping (its other requests finish), the master starts a new one"
            @serving_events << :term
          when :term
            # Its copies of the listeners too: through the drain time they would keep a stopped
            # cluster's sockets open, queueing new connections for nobody instead of refusing them.
            @server.close_listeners
            @server.stop
            start_drain(options)
          when :finished then break
          end
        end
      end

      # The pool stats, sent to the master now and every `worker_check_interval`. The `_max`
      # highs are reset at each: each check-in brings the highs of its interval, and the master
      # keeps the highest since its own last reset.
      def start_pings(options)
        Thread.new do
          loop do
            @pipes.status(@server.stats(reset_max: true))
            sleep options[:worker_check_interval]
          end
        rescue IOError, SystemCallError
          nil
        end
      end

      # `idle_timeout` in a worker: tells the master when nothing arrived for that long, and
      # when something did again (checked every quarter of the limit, at most a second apart).
      def watch_idle(limit)
        Thread.new do
          idle = false
          loop do
            now_idle = @server.idle_seconds >= limit
            @pipes.idle(now_idle) if now_idle != idle
            idle = now_idle
            sleep(idle ? [limit / 4.0, 1].min : [limit - @server.idle_seconds, 0.05].max)
          end
        rescue IOError, SystemCallError
          nil
        end
      end
    end
  end
end
