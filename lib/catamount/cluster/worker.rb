# frozen_string_literal: true

require "json"

module Catamount
  module Cluster
    # A worker process's life, from the fork to `exit!`: replace the master's traps, run
    # `before_worker_boot`, load the app unless preloaded, start its own reactor and pool on the
    # inherited listeners (the kernel spreads connections), report to the master (pipes.rb),
    # and on TERM let in-flight requests finish, run `before_worker_shutdown`, exit 0.
    #
    # INT is ignored (Ctrl-C reaches the whole group; the master stops the workers). A thread
    # blocked on the master's "alive" pipe ends the worker when the master dies. Worker 0 in
    # template mode hands its serving to `Template` (template.rb).
    class Worker
      # Signals meant for the master (a `pkill` may reach every process of the tree), and INT.
      def self.ignore_master_signals
        %w[INT TTIN TTOU USR1 USR2 URG].each { |sig| Signal.trap(sig, "IGNORE") }
      end

      # This process is worker 0 of a running cluster (Master#spawn_fresh_worker_0): it serves
      # the handed-over listeners, loads the app itself and forks the other workers.
      def self.run_fresh_worker_0(context, options)
        master_pid, pipes = Pipes.from_env
        unless pipes
          context.err.puts "catamount: #{Pipes::FRESH_WORKER_VAR} is set but is not <master pid>,<fd>,<fd>,<fd>"
          return Launcher::FAILED
        end
        context.server = Native::Server.new(context.config.native, AppLoader.new(context).rack_settings(options))
        Catamount.launcher = context.launcher
        new(context, nil, 0, master_pid: master_pid, pipes: pipes, template: true).run(options, nil)
      end

      attr_reader :index, :pipes

      # `master`: the Master this process was forked from (nil for a fresh worker 0, which gets
      # `master_pid`, `pipes` and `template`). `sibling`: forked by worker 0 rather than by the
      # master.
      def initialize(context, master, index, sibling: false, master_pid: master&.pid, pipes: master&.pipes,
                     template: master&.from_template? && index.zero?)
        @context = context
        @master = master
        @index = index
        @sibling = sibling
        @master_pid = master_pid
        @pipes = pipes
        @template = template && !sibling
        @server = context.server
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
        ctx.log_prefix = "[#{Process.pid}] "
        ctx.launcher.role = self
        @pipes.in_worker(template: @template)
        # The master now knows this pid (and may signal it: the traps are in place).
        @pipes.tell_master("f#{Process.pid}:#{@index}") if @sibling
        tag = options[:tag] || File.basename(Dir.pwd)
        Process.setproctitle("catamount: cluster worker #{@index}: #{@master_pid}#{tag.empty? ? '' : " [#{tag}]"}")
        watch_master
        hook_data = Hash.new { |h, k| h[k] = {} }
        ctx.run_hooks(:before_worker_boot, @index, keyed: hook_data)
        app ||= AppLoader.new(ctx).prepare(options)
        exit!(Launcher::FAILED) unless app

        # A sibling's copy of worker 0's server is stopped: serve the same sockets afresh.
        @server.rearm if @sibling
        @server.become_worker
        @started_at = Time.now.utc
        watch_idle(options[:idle_timeout]) if options[:idle_timeout]
        if @template
          @pipes.tell_master("b#{Process.pid}:#{@index}")
          start_pings(options)
          Template.new(ctx, self, options, app, hook_data).serve(events)
        else
          pool = start_serving(app, events)
          @pipes.tell_master("b#{Process.pid}:#{@index}")
          start_pings(options)
          serve_until_stopped(options, events)
          pool.join
        end
        ctx.run_hooks(:before_worker_shutdown, @index, keyed: hook_data)
        $stdout.flush
        $stderr.flush
        exit!(Launcher::OK)
      rescue Exception => e # rubocop:disable Lint/RescueException -- a worker must never run the master's code after a fork
        @context.err.puts "#{@context.log_prefix}! Unable to start worker: #{e.message} (#{e.class})"
        exit!(Launcher::FAILED)
      end

      # Starts the reactor and the pool; `:finished` arrives on `events` once the server ended.
      def start_serving(app, events)
        server = @server
        server.start
        pool = Pool.start(@context, server, app)
        Thread.new do
          server.wait
        ensure
          events << :finished
        end
        pool
      end

      # The launcher's role in a worker: its own pool's stats, no timers of the master's.
      def stats
        return {} unless @started_at

        @server.stats.merge(started_at: Context.iso8601(@started_at))
      end

      def status_line
        "worker: #{Context.pool_summary(stats)}"
      end

      def request(_what)
        nil
      end

      def every(interval, block)
        Timers.thread(interval, @context.err, block)
      end

      # Forks worker `index` twice over: the middle process exits at once, so the worker is
      # re-parented to the master (the subreaper) and never becomes worker 0's zombie.
      def fork_sibling(index, options, app)
        ctx = @context
        ctx.run_hooks(:before_worker_fork, index)
        middle = Process.fork do
          Process.fork do
            Worker.new(ctx, nil, index, sibling: true, master_pid: @master_pid, pipes: @pipes).run(options, app)
          ensure
            exit!(Launcher::FAILED)
          end
          exit!(Launcher::OK)
        rescue SystemCallError => e
          ctx.err.puts "#{ctx.log_prefix}! Could not fork worker #{index}: #{e.message}"
        ensure
          exit!(Launcher::FAILED) # never the app's at_exit hooks: they would run in a copy of worker 0
        end
        Process.wait(middle)
        ctx.run_hooks(:after_worker_fork, index)
      rescue SystemCallError => e
        ctx.err.puts "#{ctx.log_prefix}! Could not fork worker #{index}: #{e.message}"
      end

      def reopen_logs(options)
        @context.reopen_logs(options)
      end

      private

      # Ends this worker as soon as the master is gone (the "alive" pipe closes).
      def watch_master
        alive = @pipes.alive_r
        err = @context.err
        prefix = @context.log_prefix
        Thread.new do
          alive.read # returns when the master is gone
          err.puts "#{prefix}! Detected the master died, stopping"
          exit!(Launcher::FAILED)
        end
      end

      def serve_until_stopped(options, events)
        loop do
          case events.pop
          when :hup then reopen_logs(options)
          when :term then @server.stop
          when :finished then break
          end
        end
      end

      # The pool stats, sent to the master now and every `worker_check_interval`.
      def start_pings(options)
        Thread.new do
          loop do
            @pipes.tell_master("p#{Process.pid}#{JSON.generate(@server.stats)}")
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
            @pipes.tell_master("i#{Process.pid}:#{now_idle ? 1 : 0}") if now_idle != idle
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
