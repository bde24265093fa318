# frozen_string_literal: true

module Catamount
  module Cluster
    # The cluster master (`workers N`): binds the listeners, forks the workers, and runs one
    # loop that reads the workers' messages (pipes.rb), acts on signals, reaps children, and
    # carries out what the books (WorkerTable) decide: kill the workers past their deadline,
    # cull the surplus, fork the missing ones, step a phased restart or refork. It never serves.
    #
    # The master stays free of native threads: `Native::Server.new` starts nothing, and it only
    # ever forks, waits and signals, so every fork copies a process with one thread. Forks go
    # through Ruby's `Process.fork`, so Ruby resets its own state in the child; the child runs
    # `Worker` (worker.rb) and always ends with `exit!`.
    #
    # Where to add a signal: Signals (signals.rb: the traps, what workers do, the action it
    # asks for) and `handle_signal` (carrying the action out).
    class Master
      # What `after_worker_shutdown` hooks get: the worker's index, pid and exit status.
      WorkerInfo = Struct.new(:index, :pid, :process_status)

      def initialize(context)
        @context = context
        @pid = Process.pid
        @timers = Timers.new(context.error_log)
        @pending_signals = []
        @early_signals = []
        @table = nil
        # Open before anything may `request`: a plugin's request is then queued, not lost.
        @pipes = Pipes.open
      end

      # Boots the master and runs the cluster; returns the exit status (or execs on a hot
      # restart).
      def run(options)
        ctx = @context
        workers = options[:workers]
        preload = options[:preload_app].nil? ? workers > 1 && !options[:prune_bundler] : options[:preload_app]
        loader = AppLoader.new(ctx)
        app = nil
        if preload
          app = loader.prepare(options)
          return Launcher::FAILED unless app
        elsif !ctx.config.app
          loader.check_rackup(options[:rackup])
        end
        @server = Native::Server.new(ctx.config.native, loader.rack_settings(options))
        @control = Control.open(ctx, options)
        trap_signals(options)
        ProcessFiles.write(options, @control)
        Banner.print(ctx, options, @server, cluster: { preload: preload }, control: @control)
        log "! WARNING: a cluster of 1 worker only adds a master process; use workers 0 or 2+" if workers == 1 && !options[:silence_single_worker_warning]
        warn_about_drain_time(options)
        Catamount.launcher = ctx.launcher
        @preload = preload
        ProcessFiles.removed_after(@server, options, @control) do
          status = master_loop(options, app)
          status == :restart ? ctx.restart.exec(options, @server, @control) : status
        end
      end

      # A worker's drain (drain.rb) cut short by the master's KILL is a setting that defeats itself.
      def warn_about_drain_time(options)
        drain = options[:drain_timeout]
        limit = options[:worker_shutdown_timeout]
        return if drain < limit

        log "! WARNING: drain_timeout (#{Drain.seconds_text(drain)} s) is not shorter than worker_shutdown_timeout " \
            "(#{Drain.seconds_text(limit)} s): a stopping worker is killed before its drain time is over"
      end

      def end_by_sigterm?
        @end_by_sigterm
      end

      # Plugins' `launcher.restart` & co, and the signal traps: queued for the loop. In a
      # worker forked from this master, until it replaced the traps: kept for the worker.
      def request(what)
        return @early_signals << what if Process.pid != @pid

        @pending_signals << what
        @pipes.wake_master
      end

      # The signals that reached a new worker before it replaced the master's traps.
      def take_early_signals
        early = @early_signals
        @early_signals = []
        early
      end

      # Timers run on the master's loop: the master keeps a single thread.
      def every(interval, block)
        @timers.add(interval, @context.monotonic, block)
      end

      # Puma 8's cluster stats shape (what `Puma.stats` gives in the master, and the control
      # server serves), then `versions` and the boot and restart counts (docs/stats.md). Each
      # worker's `last_status` is its latest check-in, with the `_max` highs the highest since
      # the last `reset_max: true`.
      def stats(reset_max: false)
        return {} unless @table

        slots = @table.slots.sort_by(&:index)
        stats = {
          started_at: Context.iso8601(@started_at),
          workers: @table.slots.size,
          phase: @table.phase,
          booted_workers: @table.booted_count,
          old_workers: @table.old_count,
          worker_status: slots.map do |w|
            { started_at: Context.iso8601(w.started_wall), pid: w.pid, index: w.index, phase: w.phase, booted: w.booted?,
              last_checkin: Context.iso8601(w.checkin_wall), last_status: (w.last_status || {}).dup }
          end,
          versions: Context.versions,
          worker_boots: @table.boots,
          worker_restarts: @table.restarts
        }
        @table.reset_highs if reset_max
        stats
      end

      # A control server's role-dependent action (Control::AS_SIGNAL has the others, queued as
      # signals): false when this cluster cannot take it (Puma's 404).
      def control(command)
        case command
        when "refork"
          return log_false("* refork called but not available.") unless @context.options[:fork_worker]

          request("URG")
        when "reload-worker-directory"
          dir = @context.restart.restart_directory(@context.options)
          log "+ Changing to #{dir}"
          Dir.chdir(dir)
        else return false
        end
        true
      end

      # Each process's memory, for the metrics: the master's and every worker's. Read at most
      # once a second: reading /proc for every worker on every scrape would let a scraper (the
      # metrics listener has no token) take the loop's time.
      def memory
        return @memory if @memory_at && now - @memory_at < 1

        pids = [Process.pid] + (@table ? @table.all_workers.map(&:pid) : [])
        @memory_at = now
        @memory = pids.grep(Integer).to_h { |pid| [pid, Native.process_memory(pid)] }.compact
      end

      # For systemd's STATUS line.
      def status_line
        return "cluster: 0/0, worker_status: []" unless @table

        each = @table.slots.sort_by(&:index).map { |w| Context.pool_summary(w.last_status || {}) }
        "cluster: #{@table.booted_count}/#{@table.count}, worker_status: [#{each.join(', ')}]"
      end

      private

      def log(line)
        @context.log(line)
      end

      def now
        @context.monotonic
      end

      # Signals are queued for the master loop from now on: trapped before the pidfile and the
      # boot lines exist, so a supervisor that signals as soon as it sees either is never too
      # early. A worker inherits these traps and replaces them first thing (Worker#run), but a
      # signal can run the inherited one in between: it is kept for the worker, not lost.
      def trap_signals(options)
        signals = Signals.master_traps(restart: @context.restart_signals, fork_worker: options[:fork_worker])
        signals.each { |sig| Signal.trap(sig) { request(sig) } }
        # The master prints its backtraces from its loop: it starts no thread.
        @context.trap_backtrace_signal { request("backtraces") }
      end

      def master_loop(options, app)
        @table = WorkerTable.new(count: options[:workers], now: now, refork_after: options[:fork_worker].to_i)
        @started_at = Time.now
        # Whether the master's preloaded app is old code (after a phased restart).
        @stale_preload = false
        if options[:fork_worker] && !use_template
          @context.error "catamount: fork_worker: #{@template_error}"
          return Launcher::FAILED
        end
        @context.start_plugins
        @context.run_hooks(:before_fork)
        stopping = nil
        loop do
          next_timer = @timers.run_due(now)
          timeout = @table.wait_time(now: now, interval: options[:worker_check_interval], stopping: stopping)
          timeout = [timeout, next_timer - now].min.clamp(0.01, timeout) if next_timer
          timeout = [timeout, @control.timeout].min if @control&.timeout
          read_messages(timeout: timeout)
          @control&.serve(self)
          Banner.master_title(@server, @table, options)
          @pending_signals.shift(@pending_signals.size).each do |sig|
            stopping = handle_signal(options, sig, stopping)
          end
          reap_workers
          kill_stragglers(options)
          return halt if stopping == "halt"

          if stopping
            break if @table.empty?
          else
            return Launcher::FAILED if hopeless?

            if options[:idle_timeout] && @table.all_idle?
              log "- All workers reached idle timeout"
              stopping = begin_stop(options, "idle")
              next
            end
            kill_expired(options)
            cull_workers(options)
            spawn_missing(options, app)
            phased_restart_step
          end
        end
        return :restart if stopping == "restart"

        log "- Goodbye!"
        @end_by_sigterm = stopping == "TERM" && options[:raise_exception_on_sigterm]
        Launcher::OK
      end

      # Carries out what a signal asks for (Signals.action decides, from the cluster's state);
      # returns why the cluster is stopping (nil: it is not). CHLD asks for nothing: the loop
      # reaps.
      def handle_signal(options, sig, stopping)
        action = Signals.action(sig, stopping: stopping, phased: @table.phased?,
                                     logs_redirected: @context.logs_redirected?(options))
        case action
        when :stop then return begin_stop(options, sig)
        when :halt then return "halt"
        when :hot_restart then return begin_hot_restart
        when :phased_restart then return begin_phased_restart(options)
        when :refork then begin_refork
        when :add_worker, :remove_worker then change_worker_count(options, action == :add_worker ? 1 : -1)
        when :reopen_logs
          @context.reopen_logs(options)
          signal_workers("HUP")
        when :backtraces then @context.backtraces
        end
        stopping
      end

      # TTIN / TTOU: one worker more, or one fewer (never fewer than one). The surplus worker is
      # chosen by `worker_culling_strategy`.
      def change_worker_count(options, delta)
        count = @table.resize(delta, now: now)
        return unless count

        log "- Worker count now #{count}"
        cull_workers(options)
      end

      def cull_workers(options)
        @table.cull(options[:worker_culling_strategy], now: now).each do |w|
          log "- Worker #{w.index} (PID: #{w.pid}) terminating: worker count lowered"
          kill(w.pid, "TERM")
        end
      end

      # USR2: every worker stops gracefully (connections keep queueing on the sockets the master
      # holds), then the master execs itself (Restart#exec). Announced first on the restart
      # pipe: a hot restart does not drain (lib/catamount/drain.rb says why), also in workers
      # already draining.
      def begin_hot_restart
        log "* Restarting..."
        @pipes.announce_hot_restart
        @table.stop_all(now: now).each { |w| kill(w.pid, "TERM") }
        "restart"
      end

      # USR1 without preload: workers are replaced one at a time, each new one loading the app
      # afresh (so new code is served), and a worker is stopped only while all the others are
      # booted and serving, so capacity never drops by more than one worker.
      #
      # With a preloaded app (where Puma falls back to a hot restart), worker 0 is replaced first
      # by a new run of the command that loads the new code (spawn_fresh_worker_0), and every
      # other worker is then forked from it, as with fork_worker.
      def begin_phased_restart(options)
        if @preload && !@stale_preload
          unless use_template
            log "! #{@template_error}: a phased restart of a preloaded app restarts hot instead"
            return begin_hot_restart
          end
          @stale_preload = true
        end
        phase = @table.begin_phased_restart
        log "- Starting phased worker restart, phase: #{phase}"
        dir = @context.restart.restart_directory(options)
        if dir != Dir.pwd
          log "+ Changing to #{dir}"
          Dir.chdir(dir)
        end
        nil
      end

      # URG, or worker 0 past `fork_worker` requests: every worker but worker 0 is replaced, one
      # at a time as in a phased restart, by a fork of worker 0 as it is now (warmed up).
      def begin_refork
        return log "* refork called but not available." unless @table.begin_refork

        log "- Starting worker refork, phase: #{@table.phase}"
      end

      # From now on workers other than 0 are forked from worker 0; the master must then reap
      # the workers it did not fork itself.
      # False (why in @template_error) where the kernel refuses it: workers forked by worker 0
      # would then be nobody's to reap.
      def use_template
        Native.become_child_subreaper unless @table.from_template
        @table.from_template = true
      rescue RuntimeError => e
        @template_error = e.message
        false
      end

      def phased_restart_step
        step, what = @table.phase_step(now: now)
        case step
        when :stop
          log "- Stopping #{what.pid} for #{@table.reforking? ? 'refork' : 'phased upgrade'}..."
          kill(what.pid, "TERM")
        when :done
          if what == :refork
            @pipes.template_refork_done
            log "- Refork complete, phase: #{@table.phase}"
          else
            log "- Phased restart complete, phase: #{@table.phase}"
          end
          @context.run_hooks(:after_booted)
        end
      end

      # The workers' messages (Pipes#read parses them), each an event for the books.
      def read_messages(timeout:)
        @pipes.read(timeout, also: @control&.ios).each do |message|
          next forked_worker_reported(message.pid, message.index) if message.kind == :forked

          worker = @table.checked_in(message.pid, now: now, wall: Time.now)
          next unless worker

          case message.kind
          when :status then begin_refork if @table.status(worker, message.value)
          when :idle then @table.idle(worker, message.value)
          when :booted then worker_booted(worker)
          when :drained
            @table.drained(worker)
          end
        end
      end

      def worker_booted(worker)
        announce = @table.booted(worker, now: now)
        log format("- Worker %d (PID: %d) booted in %.2fs, phase: %d", worker.index, worker.pid, worker.booted_at - worker.started_at, worker.phase)
        @context.run_hooks(:after_booted) if announce
      end

      # `f<pid>:<index>`: a worker worker 0 forked. One the master no longer waits for (its slot
      # was cleared) is stopped at once; one already reaped (it died right after writing this)
      # frees its slot as a failed boot.
      def forked_worker_reported(pid, index)
        report = @table.fork_reported(pid, index, now: now)
        case report.outcome
        when :unknown then kill(pid, "TERM")
        when :died then log_failed_boot(index, pid, report.status, report.delay)
        else
          kill(pid, "TERM") if report.slot.stopping?
        end
      end

      def log_failed_boot(index, pid, status, delay)
        log "! Worker #{index} (PID: #{pid}) failed to boot (#{describe_status(status)}); next try in #{delay}s"
      end

      def reap_workers
        loop do
          pid, status = Process.wait2(-1, Process::WNOHANG)
          break unless pid

          exit = @table.exited(pid, status, now: now)
          next unless exit

          worker = exit.slot
          case exit.outcome
          when :failed_boot then log_failed_boot(worker.index, pid, status, exit.delay)
          when :died
            log "! Worker #{worker.index} (PID: #{pid}) died (#{describe_status(status)}); starting a new one"
          end
          @context.run_hooks(:after_worker_shutdown, WorkerInfo.new(worker.index, pid, status))
        end
      rescue Errno::ECHILD
        nil
      end

      def describe_status(status)
        status.signaled? ? "killed by SIG#{Signal.signame(status.termsig)}" : "exit #{status.exitstatus}"
      end

      def hopeless?
        return false unless @table.hopeless?

        @context.error "catamount: no worker could boot (#{@table.failed_boots} tries); stopping"
        signal_workers("KILL")
        true
      end

      # Kills a worker that stopped checking in (`worker_timeout`) or never finished booting
      # (`worker_boot_timeout`), the next round replaces it; replaces a worker 0 that did not
      # fork a worker in time (WorkerTable#expire).
      def kill_expired(options)
        expired = @table.expire(now: now, worker_timeout: options[:worker_timeout], boot_timeout: options[:worker_boot_timeout])
        expired.each do |e|
          if e.action == :replace_template
            log "! Worker 0 (PID: #{e.template.pid}) did not fork worker #{e.slot.index} within #{e.limit.round} seconds; replacing it"
            kill(e.template.pid, "TERM")
          else
            log "! Terminating timed out worker (Worker #{e.slot.index} failed to #{e.missed} within #{e.limit.round} seconds): #{e.slot.pid}"
            kill(e.slot.pid, "KILL")
          end
        end
      end

      # Forks workers until there are as many as wanted, each at the lowest free index.
      def spawn_missing(options, app)
        indexes = @table.to_spawn(now)
        return unless indexes
        return spawn_from_template(indexes, options, app) if @table.from_template
        return if indexes.empty?

        nakayoshi_gc if options[:nakayoshi_fork]
        indexes.each { |index| spawn_worker(index, options, app) }
      end

      # fork_worker: worker 0 comes from the master, every other worker from worker 0 once it
      # has booted (it stops serving while it forks them, then serves again). A new worker 0
      # waits for its first `0`: the workers missing when it boots are forked before it serves.
      def spawn_from_template(indexes, options, app)
        if indexes.include?(0)
          nakayoshi_gc if options[:nakayoshi_fork]
          @pipes.renew_fork_pipe
          spawn_worker(0, options, app)
          @pipes.forked_template
          @template_serving = false
        end
        return unless @table.template

        siblings = indexes - [0]
        if siblings.empty?
          @pipes.template_serve unless @template_serving
        else
          @pipes.template_fork(siblings, @table.phase)
          @table.fork_requested(siblings, now: now, wall: Time.now)
        end
        @template_serving = true
      end

      # `nakayoshi_fork`: collect (and compact) before forking, so the pages the workers share
      # copy-on-write are not dirtied by the first GC in each of them.
      def nakayoshi_gc
        4.times { GC.start(full_mark: true, immediate_sweep: true) }
        GC.compact if GC.respond_to?(:compact)
      rescue NotImplementedError
        nil
      end

      def spawn_worker(index, options, app)
        return spawn_fresh_worker_0(options) if index.zero? && @stale_preload

        @context.run_hooks(:before_worker_fork, index)
        started = now
        pid = Process.fork do
          @control&.close_in_child
          Worker.new(@context, server: @server, index: index, master_pid: @pid, pipes: @pipes, phase: @table.phase,
                               template: @table.from_template && index.zero?, master: self).run(options, app)
        ensure
          @context.exit_now!(Launcher::FAILED) # a worker never returns into the master's code
        end
        @table.forked(index, pid, now: started, wall: Time.now)
        @context.run_hooks(:after_worker_fork, index)
      end

      # Worker 0 once the master's preloaded app is old code (a phased restart): a new run of the
      # command, as a hot restart would run it, told by CATAMOUNT_CLUSTER_WORKER to be worker 0
      # of this master (Worker.run_fresh_worker_0) and handed the listeners and the pipes.
      def spawn_fresh_worker_0(options)
        restart = @context.restart
        @context.run_hooks(:before_worker_fork, 0)
        env = restart.boot_env.dup
        sockets = restart.hand_over(env, @server.restart_fds)
        env[Pipes::FRESH_WORKER_VAR], pipe_fds = @pipes.for_fresh_worker(@pid, @table.phase)
        # The pipes keep their numbers: open here, they are none of the 3, 4, ... that systemd's
        # sockets are handed on at (this process's listeners hold those).
        keep = sockets.merge(pipe_fds.to_h { |fd| [fd, fd] })
        pid = Process.spawn(env, *restart.restart_argv(options), keep.merge(unsetenv_others: true))
        @table.forked(0, pid, now: now, wall: Time.now)
        @context.run_hooks(:after_worker_fork, 0)
      rescue SystemCallError => e
        @table.failed_boot(now)
        log "! Could not start worker 0 with the new code: #{e.message}"
      end

      # `/halt`: the master ends now, its workers with it (each sees the master gone), as
      # Puma's does; the answer and the log lines get out first.
      def halt
        log "* Stopping immediately!"
        @control&.flush
        Launcher::OK
      end

      def log_false(line)
        log(line)
        false
      end

      # A plain stop: the master closes its copies of the listening sockets (new connections are
      # refused once the workers' close too) and every worker finishes what it has.
      def begin_stop(options, why)
        @context.run_hooks(:after_stopped)
        log "- Gracefully shutting down workers..."
        @server.close_listeners
        force_after = options[:force_shutdown_after].is_a?(Numeric) ? options[:force_shutdown_after] : nil
        @table.stop_all(now: now, force_after: force_after).each { |w| kill(w.pid, "TERM") }
        why
      end

      # A worker still alive `worker_shutdown_timeout` after its TERM (or when
      # `force_shutdown_after` runs out) is killed.
      def kill_stragglers(options)
        @table.stragglers(now: now, shutdown_timeout: options[:worker_shutdown_timeout]).each { |w| kill(w.pid, "KILL") }
      end

      def signal_workers(sig)
        @table.all_workers.each { |w| kill(w.pid, sig) }
      end

      # Signals a worker; nothing for a slot not reported yet (no pid) or a process gone.
      def kill(pid, sig)
        return unless pid.is_a?(Integer) && pid.positive?

        Process.kill(sig, pid)
      rescue Errno::ESRCH
        nil
      end
    end
  end
end
