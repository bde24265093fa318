# frozen_string_literal: true

require "json"

module Catamount
  # Cluster mode (`workers N`): a master that never serves requests and N forked workers that
  # all accept on the listeners the master bound.
  #
  # The master stays free of native threads: it binds the listeners (`Native::Server.new`
  # starts nothing) and only ever forks, waits and signals, so every fork copies a process
  # with one thread. Each worker starts its own reactor and pool after the fork. Forks go
  # through Ruby's `Process.fork`, so Ruby resets its own state in the child.
  #
  # Workers talk to the master over one pipe, a line per message: `b<pid>:<index>` when booted,
  # `p<pid>{json}` with the worker's pool stats right after and then every
  # `worker_check_interval` (a worker silent for `worker_timeout` is killed and replaced),
  # `i<pid>:1` / `i<pid>:0` when it became idle for `idle_timeout` / busy again.
  # Workers hold the read end of a second pipe the master writes nothing to: when the master
  # dies it closes, and the workers stop at once.
  #
  # `fork_worker`: the master forks worker 0 only; worker 0 forks the others (so they share the
  # memory it warmed up) when the master asks on a third pipe, one command a line: `-1` stop
  # serving (run `before_refork` if it was serving), `<n>` fork worker n, `0` serve (again),
  # `-2` a refork cycle ended (run `after_refork`). Worker 0 forks only while its server is
  # stopped and every native thread of it has ended, and forks twice (the middle process exits
  # at once) so the new worker is re-parented to the master, which is the "child subreaper" of
  # its descendants: it waits for every worker as its own child. A new worker reports its pid
  # with `f<pid>:<index>` as its first message.
  #
  # Mixed into Launcher: it uses the launcher's logging, app loading and pidfile helpers.
  module Cluster
    # A worker as the master sees it.
    # Times are monotonic seconds, except `started_wall` and `checkin_wall` (for stats);
    # `last_status` is the worker's pool stats from its latest ping. `pid` is nil while worker 0
    # is forking it (`fork_worker`) and it has not reported yet.
    Worker = Struct.new(:index, :pid, :phase, :started_at, :started_wall, :booted_at, :last_checkin, :checkin_wall,
                        :last_status, :term_sent_at, :idle, keyword_init: true) do
      def booted?
        !booted_at.nil?
      end
    end

    # Names the master and the pipes (messages, master-alive, commands) of the cluster a fresh
    # worker 0 joins: "<master pid>,<fd>,<fd>,<fd>".
    FRESH_WORKER_VAR = "CATAMOUNT_CLUSTER_WORKER"

    # Waits between failed worker boots grow from 1 s to this, so a broken app never makes a
    # fork storm.
    MAX_BACKOFF = 30
    # A master whose workers failed this many boots in a row, none ever booted, gives up.
    HOPELESS_BOOTS = 4

    private

    def run_cluster(options)
      @log_prefix = "[#{Process.pid}] "
      @master_pid = Process.pid
      workers = options[:workers]
      preload = options[:preload_app].nil? ? workers > 1 && !options[:prune_bundler] : options[:preload_app]
      app = nil
      if preload
        app = prepare_app(options)
        return Launcher::FAILED unless app
      elsif !@config.app
        load_rackup_check(options[:rackup])
      end
      @server = Native::Server.new(@config.native, rack_settings(options))
      trap_master_signals(options)
      write_pidfile(options[:pidfile])
      write_state(options)
      banner(options, @server, cluster: { preload: preload })
      log "! WARNING: a cluster of 1 worker only adds a master process; use workers 0 or 2+" if workers == 1 && !options[:silence_single_worker_warning]
      Catamount.launcher = self
      @preload = preload
      begin
        status = master_loop(options, app)
        status == :restart ? exec_restart(options, @server) : status
      ensure
        @server.unlink_unix_sockets
        remove_pidfile(options[:pidfile])
      end
    end

    # Without preload the master only checks that the rackup file is there; workers load it.
    def load_rackup_check(rackup)
      raise ConfigError, "rackup file #{rackup} not found (in #{Dir.pwd})" unless File.file?(rackup)
      raise ConfigError, "rackup file #{rackup} is not readable" unless File.readable?(rackup)
    end

    # Signals are queued for the master loop from now on: trapped before the pidfile and the
    # boot lines exist, so a supervisor that signals as soon as it sees either is never too early.
    def trap_master_signals(options)
      @messages_r, @messages_w = IO.pipe
      @pending_signals = []
      # A worker inherits these traps and replaces them first thing (worker_main), but a
      # signal can run the inherited one in between: it is kept for the worker, not lost.
      @request = lambda do |what|
        next (@early_signals ||= []) << what if Process.pid != @master_pid

        @pending_signals << what
        wake_master
      end
      signals = %w[TERM INT CHLD HUP TTIN TTOU] + restart_signals
      signals << "URG" if options[:fork_worker]
      signals.each do |sig|
        Signal.trap(sig) { @request.call(sig) }
      end
      # The master prints its backtraces from its loop: it starts no thread.
      trap_backtrace_signal { @request.call("backtraces") }
    end

    def master_loop(options, app)
      @alive_r, @alive_w = IO.pipe
      @workers = []
      @failed_boots = 0
      @next_spawn_at = monotonic
      @ever_booted = false
      @booted_announced = false
      @worker_count = options[:workers]
      @started_at = Time.now
      @phase = 0
      @phased_restart = false
      @timers = []
      @fork_worker = options[:fork_worker]
      # Whether workers other than 0 are forked from worker 0: with fork_worker, and after a
      # phased restart of a preloaded app (the master's copy of the app is then old code).
      @from_template = false
      @stale_preload = false
      if @fork_worker && !use_template
        @err.puts "catamount: fork_worker: #{@template_error}"
        return Launcher::FAILED
      end
      @reforking = false
      @config.plugins.each { |plugin| start_plugin(plugin) }
      @config.run_hooks(:before_fork, log: @err)
      stopping = nil
      loop do
        next_timer = run_due_timers
        timeout = master_timeout(options, stopping)
        timeout = [timeout, next_timer - monotonic].min.clamp(0.01, timeout) if next_timer
        read_messages(options, timeout: timeout)
        @pending_signals.shift(@pending_signals.size).each do |sig|
          stopping = handle_signal(options, sig, stopping)
        end
        reap_workers(options)
        kill_stragglers(options)
        if stopping
          break if @workers.empty?
        else
          return Launcher::FAILED if hopeless?

          if all_idle?(options)
            log "- All workers reached idle timeout"
            stopping = begin_cluster_stop(options, "idle")
            next
          end
          check_timeouts(options)
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

    # What a signal to the master does; returns why the cluster is stopping (nil: it is not).
    # A stop asked for during a hot restart wins (nothing is exec'd); a restart asked for
    # while stopping is ignored; a hot restart during a phased one takes over.
    def handle_signal(options, sig, stopping)
      case sig
      when "CHLD" then nil # reaped by the loop
      when "HUP"
        if options[:redirect_stdout] || options[:redirect_stderr]
          redirect_stdio(options, reopen: true)
          signal_workers("HUP")
        else
          return stopping || begin_cluster_stop(options, "HUP")
        end
      when "backtraces" then backtraces
      when "TTIN", "TTOU"
        change_worker_count(options, sig == "TTIN" ? 1 : -1) unless stopping
      when "USR1"
        return stopping || begin_phased_restart(options)
      when "USR2"
        return stopping || begin_hot_restart
      when "URG"
        begin_refork unless stopping || @phased_restart
      else
        return stopping if stopping && stopping != "restart"

        return begin_cluster_stop(options, sig)
      end
      stopping
    end

    # TTIN / TTOU: one worker more, or one fewer (never fewer than one). The surplus worker is
    # chosen by `worker_culling_strategy`.
    def change_worker_count(options, delta)
      count = [@worker_count + delta, 1].max
      return if count == @worker_count

      @worker_count = count
      @next_spawn_at = monotonic if delta.positive?
      log "- Worker count now #{count}"
      cull_workers(options)
    end

    def cull_workers(options)
      live = @workers.reject(&:term_sent_at)
      surplus = live.size - @worker_count
      return if surplus < 1

      # With fork_worker, worker 0 is the one the others are forked from: it stays.
      live.reject! { |w| w.index.zero? } if @from_template
      by_age = live.sort_by(&:started_at)
      by_age.reverse! unless options[:worker_culling_strategy].to_s == "oldest"
      by_age.first(surplus).each do |w|
        log "- Worker #{w.index} (PID: #{w.pid}) terminating: worker count lowered"
        stop_worker(w)
      end
    end

    # A worker not yet reported by worker 0 (no pid) gets its TERM when it reports.
    def stop_worker(worker)
      kill(worker.pid, "TERM")
      worker.term_sent_at ||= monotonic
    end

    # USR2: every worker stops gracefully (connections keep queueing on the sockets the master
    # holds), then the master execs itself (Restart#exec_restart).
    def begin_hot_restart
      log "* Restarting..."
      @workers.each { |w| stop_worker(w) }
      @stop_began = monotonic
      @force_at = nil
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
      @phase += 1
      @phased_restart = true
      @reforking = false
      log "- Starting phased worker restart, phase: #{@phase}"
      dir = restart_directory(options)
      if dir != Dir.pwd
        log "+ Changing to #{dir}"
        Dir.chdir(dir)
      end
      nil
    end

    # URG, or worker 0 past `fork_worker` requests: every worker but worker 0 is replaced, one
    # at a time as in a phased restart, by a fork of worker 0 as it is now (warmed up).
    def begin_refork
      template = @workers.find { |w| w.index.zero? && w.booted? && !w.term_sent_at }
      return log "* refork called but not available." unless template

      @phase += 1
      template.phase = @phase
      @phased_restart = true
      @reforking = true
      log "- Starting worker refork, phase: #{@phase}"
    end

    # From now on workers other than 0 are forked from worker 0; the master must then reap
    # the workers it did not fork itself.
    # False (why in @template_error) where the kernel refuses it: workers forked by worker 0
    # would then be nobody's to reap.
    def use_template
      Native.become_child_subreaper unless @from_template
      @from_template = true
    rescue RuntimeError => e
      @template_error = e.message
      false
    end

    def phased_restart_step
      return unless @phased_restart
      return unless @workers.size >= @worker_count && @workers.all? { |w| w.booted? && !w.term_sent_at }

      old = @workers.select { |w| w.phase < @phase }.min_by(&:index)
      if old
        log "- Stopping #{old.pid} for #{@reforking ? 'refork' : 'phased upgrade'}..."
        stop_worker(old)
      else
        @phased_restart = false
        if @reforking
          @reforking = false
          command_template("-2")
          log "- Refork complete, phase: #{@phase}"
        else
          log "- Phased restart complete, phase: #{@phase}"
        end
        @config.run_hooks(:after_booted, log: @err)
      end
    end

    def wake_master
      @messages_w.write_nonblock("!\n", exception: false)
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # How long the master may sleep: until the next check-in deadline or spawn, at most the
    # check interval (a second while stopping, to send KILLs on time).
    def master_timeout(options, stopping)
      return 1.0 if stopping

      interval = options[:worker_check_interval]
      wait = [interval, @next_spawn_at - monotonic].min if @workers.size < @worker_count
      [wait || interval, 0.05].max
    end

    def read_messages(options, timeout:)
      return unless @messages_r.wait_readable(timeout)

      data = @messages_r.read_nonblock(65_536, exception: false)
      return unless data.is_a?(String)

      # Messages are lines; a read may end inside one, kept for the next read.
      lines = "#{@partial}#{data}".split("\n", -1)
      @partial = lines.pop
      lines.each { |line| handle_message(options, line) }
    end

    def handle_message(options, line)
      kind = line[0]
      pid = line[1..].to_i
      return forked_worker_reported(line) if kind == "f"

      worker = @workers.find { |w| w.pid == pid }
      return if kind == "!" || worker.nil?

      worker.last_checkin = monotonic
      worker.checkin_wall = Time.now
      if kind == "p"
        record_status(worker, line)
        return maybe_auto_refork(worker)
      end
      return worker.idle = line.end_with?(":1") if kind == "i"
      return unless kind == "b"

      worker.booted_at = monotonic
      @failed_boots = 0
      @ever_booted = true
      log format("- Worker %d (PID: %d) booted in %.2fs, phase: %d", worker.index, pid, worker.booted_at - worker.started_at, worker.phase)
      return if @booted_announced || @workers.count(&:booted?) < @worker_count

      @booted_announced = true
      @config.run_hooks(:after_booted, log: @err)
    end

    # `f<pid>:<index>`: a worker worker 0 forked. One the master no longer waits for (its slot
    # was cleared) is stopped at once; one already reaped (it died right after writing this)
    # frees its slot as a failed boot.
    def forked_worker_reported(line)
      pid, index = line[1..].split(":").map(&:to_i)
      worker = @workers.find { |w| w.index == index && w.pid.nil? }
      return kill(pid, "TERM") unless worker

      if (status = @reaped_unknown&.delete(pid))
        @workers.delete(worker)
        return log "! Worker #{index} (PID: #{pid}) failed to boot (#{describe_status(status)}); next try in #{failed_boot}s"
      end
      worker.pid = pid
      worker.last_checkin = monotonic
      kill(pid, "TERM") if worker.term_sent_at
    end

    # `idle_timeout`: every worker (all there, none stopping) said it is idle.
    def all_idle?(options)
      return false unless options[:idle_timeout] && !@phased_restart
      return false if @workers.size < @worker_count

      @workers.all? { |w| w.idle && !w.term_sent_at }
    end

    # `fork_worker N`: once worker 0 of the first phase has served N requests, one refork.
    def maybe_auto_refork(worker)
      limit = @fork_worker.to_i
      return unless limit.positive? && worker.index.zero? && worker.phase.zero? && worker.booted?
      return if @phased_restart || worker.term_sent_at
      return unless worker.last_status.is_a?(Hash) && worker.last_status[:requests_count].to_i >= limit

      begin_refork
    end

    def record_status(worker, line)
      json = line[/\A.\d+(.*)\z/, 1]
      return if json.to_s.empty?

      worker.last_status = JSON.parse(json, symbolize_names: true)
    rescue JSON::ParserError
      nil
    end

    # Puma's cluster stats shape (what `Puma.stats` gives in the master, and the control
    # server will serve).
    def cluster_stats
      {
        started_at: iso8601(@started_at),
        workers: @worker_count,
        phase: @phase,
        booted_workers: @workers.count(&:booted?),
        old_workers: @workers.count { |w| w.phase < @phase },
        worker_status: @workers.sort_by(&:index).map do |w|
          { started_at: iso8601(w.started_wall), pid: w.pid, index: w.index, phase: w.phase, booted: w.booted?,
            last_checkin: iso8601(w.checkin_wall), last_status: w.last_status || {} }
        end
      }
    end

    # For systemd's STATUS line.
    def cluster_status_line
      each = @workers.sort_by(&:index).map { |w| pool_summary(w.last_status || {}) }
      "cluster: #{@workers.count(&:booted?)}/#{@worker_count}, worker_status: [#{each.join(', ')}]"
    end

    # The master of a cluster (not one of its workers, not a single-mode server).
    def cluster_master?
      @workers && !@in_worker
    end

    def reap_workers(options)
      loop do
        pid, status = Process.wait2(-1, Process::WNOHANG)
        break unless pid

        worker = @workers.find { |w| w.pid == pid }
        next remember_reaped(pid, status) unless worker

        @workers.delete(worker)
        # Workers it had been asked to fork and had not reported are asked of the next one.
        @workers.reject! { |w| w.pid.nil? } if worker.index.zero? && @from_template
        unless worker.booted? || worker.term_sent_at
          delay = failed_boot
          log "! Worker #{worker.index} (PID: #{pid}) failed to boot (#{describe_status(status)}); next try in #{delay}s"
        end
        if worker.booted? && !worker.term_sent_at
          log "! Worker #{worker.index} (PID: #{pid}) died (#{describe_status(status)}); starting a new one"
        end
        @config.run_hooks(:after_worker_shutdown, WorkerInfo.new(worker.index, pid, status), log: @err)
      end
    rescue Errno::ECHILD
      nil
    end

    # Counts a worker that never booted and pushes the next spawn back (1, 2, 4, … s); returns
    # the wait.
    def failed_boot
      @failed_boots += 1
      delay = [2**(@failed_boots - 1), MAX_BACKOFF].min
      @next_spawn_at = monotonic + delay
      delay
    end

    # Children reaped that no slot knew (yet): a forked worker can die before its `f` is read.
    def remember_reaped(pid, status)
      @reaped_unknown ||= {}
      @reaped_unknown[pid] = status
      @reaped_unknown.shift while @reaped_unknown.size > 64
    end

    # What `after_worker_shutdown` hooks get: the worker's index, pid and exit status.
    WorkerInfo = Struct.new(:index, :pid, :process_status)

    def describe_status(status)
      status.signaled? ? "killed by SIG#{Signal.signame(status.termsig)}" : "exit #{status.exitstatus}"
    end

    def hopeless?
      return false if @ever_booted || @failed_boots < HOPELESS_BOOTS

      @err.puts "catamount: no worker could boot (#{@failed_boots} tries); stopping"
      signal_workers("KILL")
      true
    end

    # Kills a worker that stopped checking in (`worker_timeout`) or never finished booting
    # (`worker_boot_timeout`); the next round replaces it.
    #
    # A worker worker 0 was asked to fork and has not reported within `worker_boot_timeout`
    # means worker 0 cannot fork (a request it waits for does not end): worker 0 is replaced,
    # and its death clears the slots it owed (asking again would queue a second fork).
    def check_timeouts(options)
      now = monotonic
      @workers.dup.each do |w|
        next if w.term_sent_at

        limit = w.booted? ? options[:worker_timeout] : options[:worker_boot_timeout]
        next if now - (w.last_checkin || w.started_at) < limit

        unless w.pid
          template = @workers.find { |t| t.index.zero? && t.pid && !t.term_sent_at }
          next unless template

          log "! Worker 0 (PID: #{template.pid}) did not fork worker #{w.index} within #{limit.round} seconds; replacing it"
          stop_worker(template)
          next
        end
        what = w.booted? ? "check in" : "boot"
        log "! Terminating timed out worker (Worker #{w.index} failed to #{what} within #{limit.round} seconds): #{w.pid}"
        kill(w.pid, "KILL")
        w.term_sent_at = now
      end
    end

    # Forks workers until there are `@worker_count` (a stopping worker still counts until it
    # is reaped, so its replacement takes its index), each at the lowest free index.
    def spawn_missing(options, app)
      return if monotonic < @next_spawn_at

      missing = [@worker_count - @workers.size, 0].max
      taken = @workers.map(&:index)
      indexes = (0..).lazy.reject { |i| taken.include?(i) }.first(missing)
      return spawn_from_template(indexes, options, app) if @from_template
      return if indexes.empty?

      nakayoshi_gc if options[:nakayoshi_fork]
      indexes.each { |index| spawn_worker(index, options, app) }
    end

    # fork_worker: worker 0 comes from the master, every other worker from worker 0 once it has
    # booted (it stops serving while it forks them, then serves again). A new worker 0 waits
    # for its first `0`: the workers missing when it boots are forked before it serves.
    def spawn_from_template(indexes, options, app)
      if indexes.include?(0)
        nakayoshi_gc if options[:nakayoshi_fork]
        @fork_r&.close
        @fork_w&.close
        @fork_r, @fork_w = IO.pipe
        spawn_worker(0, options, app)
        @fork_r&.close
        @fork_r = nil
        @template_serving = false
      end
      template = @workers.find { |w| w.index.zero? }
      return unless template&.booted? && !template.term_sent_at

      siblings = indexes - [0]
      if siblings.empty?
        command_template("0") unless @template_serving
      else
        now = monotonic
        command_template("-1", *siblings.map(&:to_s), "0")
        siblings.each do |index|
          @workers << Worker.new(index: index, pid: nil, phase: @phase, started_at: now, started_wall: Time.now)
        end
      end
      @template_serving = true
    end

    # Writes command lines to worker 0 (fork_worker). A worker 0 gone away is reaped and
    # replaced by the loop; its unread commands die with its pipe.
    def command_template(*lines)
      @fork_w&.write_nonblock(lines.map { |l| "#{l}\n" }.join, exception: false)
    rescue IOError, SystemCallError
      nil
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

      @config.run_hooks(:before_worker_fork, index, log: @err)
      started = monotonic
      pid = Process.fork do
        worker_main(index, options, app)
      ensure
        exit!(Launcher::FAILED) # a worker never returns into the master's code
      end
      @workers << Worker.new(index: index, pid: pid, phase: @phase, started_at: started, started_wall: Time.now)
      @config.run_hooks(:after_worker_fork, index, log: @err)
    end

    # Worker 0 once the master's preloaded app is old code (a phased restart): a new run of the
    # command, as a hot restart would run it, told by CATAMOUNT_CLUSTER_WORKER to be worker 0 of
    # this master (run_fresh_worker_0) and handed the listeners and the cluster's pipes.
    def spawn_fresh_worker_0(options)
      @config.run_hooks(:before_worker_fork, 0, log: @err)
      pipes = [@messages_w, @alive_r, @fork_r]
      env = @boot_env.dup
      sockets = hand_over(env, @server.restart_fds)
      env[FRESH_WORKER_VAR] = [@master_pid, *pipes.map(&:fileno)].join(",")
      keep = (sockets + pipes.map(&:fileno)).to_h { |fd| [fd, fd] }
      pid = Process.spawn(env, *restart_argv(options), keep.merge(unsetenv_others: true))
      @workers << Worker.new(index: 0, pid: pid, phase: @phase, started_at: monotonic, started_wall: Time.now)
      @config.run_hooks(:after_worker_fork, 0, log: @err)
    rescue SystemCallError => e
      failed_boot
      log "! Could not start worker 0 with the new code: #{e.message}"
    end

    # A plain stop: the master closes its copies of the listening sockets (new connections are
    # refused once the workers' close too) and every worker finishes what it has.
    def begin_cluster_stop(options, why)
      @config.run_hooks(:after_stopped, log: @err)
      log "- Gracefully shutting down workers..."
      @server.close_listeners
      now = monotonic
      @workers.each { |w| stop_worker(w) }
      @stop_began = now
      @force_at = options[:force_shutdown_after].is_a?(Numeric) ? now + options[:force_shutdown_after] : nil
      why
    end

    # A worker still alive `worker_shutdown_timeout` after its TERM (or when
    # `force_shutdown_after` runs out) is killed.
    def kill_stragglers(options)
      limit = options[:worker_shutdown_timeout]
      now = monotonic
      @workers.dup.each do |w|
        next unless w.term_sent_at
        next unless now - w.term_sent_at >= limit || (@force_at && now >= @force_at)

        # Never reported by worker 0: nothing to kill, nothing to wait for.
        next @workers.delete(w) unless w.pid

        kill(w.pid, "KILL")
      end
    end

    def signal_workers(sig)
      @workers.each { |w| kill(w.pid, sig) }
    end

    # Signals a worker; nothing for a slot not reported yet (no pid) or a process gone.
    def kill(pid, sig)
      return unless pid.is_a?(Integer) && pid.positive?

      Process.kill(sig, pid)
    rescue Errno::ESRCH
      nil
    end

    # --- in the worker process -------------------------------------------------------------

    # A worker's life: set up, boot, serve until told to stop, exit. `sibling`: forked by
    # worker 0 (fork_worker) rather than by the master.
    def worker_main(index, options, app, sibling: false)
      # Traps first: until then a signal would run the handlers of the process forked from.
      events = Queue.new
      Signal.trap("TERM") { events << :term }
      Signal.trap("HUP") { events << :hup }
      ignore_master_signals
      Signal.trap("CHLD", "DEFAULT")
      trap_backtrace_signal
      early = @early_signals || []
      @early_signals = nil
      events << :term if early.include?("TERM")
      events << :hup if early.include?("HUP")
      @log_prefix = "[#{Process.pid}] "
      @in_worker = true
      @timers = nil
      @alive_w&.close
      @messages_r&.close
      @fork_w&.close
      template = @from_template && index.zero? && !sibling
      @fork_r&.close unless template
      # The master now knows this pid (and may signal it: the traps are in place).
      @messages_w.write("f#{Process.pid}:#{index}\n") if sibling
      tag = options[:tag] || File.basename(Dir.pwd)
      Process.setproctitle("catamount: cluster worker #{index}: #{@master_pid}#{tag.empty? ? '' : " [#{tag}]"}")
      Thread.new do
        @alive_r.read # returns when the master is gone
        @err.puts "#{@log_prefix}! Detected the master died, stopping"
        exit!(Launcher::FAILED)
      end
      hook_data = Hash.new { |h, k| h[k] = {} }
      @config.run_hooks(:before_worker_boot, index, log: @err, keyed: hook_data)
      app ||= prepare_app(options)
      exit!(Launcher::FAILED) unless app

      # A sibling's copy of worker 0's server is stopped: serve the same sockets afresh.
      @server.rearm if sibling
      @server.become_worker
      @started_at = Time.now.utc
      watch_idle_in_worker(options[:idle_timeout]) if options[:idle_timeout]
      if template
        @messages_w.write("b#{Process.pid}:#{index}\n")
        start_pings(options)
        serve_as_template(options, app, events, hook_data)
      else
        pool = start_serving(app, events)
        @messages_w.write("b#{Process.pid}:#{index}\n")
        start_pings(options)
        serve_until_stopped(options, events)
        pool.join
      end
      @config.run_hooks(:before_worker_shutdown, index, log: @err, keyed: hook_data)
      $stdout.flush
      $stderr.flush
      exit!(Launcher::OK)
    rescue Exception => e # rubocop:disable Lint/RescueException -- a worker must never run the master's code after a fork
      @err.puts "#{@log_prefix}! Unable to start worker: #{e.message} (#{e.class})"
      exit!(Launcher::FAILED)
    end

    # This process is worker 0 of a running cluster (spawn_fresh_worker_0): it serves the
    # handed-over listeners, loads the app itself and forks the other workers.
    def run_fresh_worker_0(options)
      master, *fds = ENV.delete(FRESH_WORKER_VAR).to_s.split(",").map { |n| Integer(n, 10, exception: false) }
      unless master && fds.size == 3 && fds.all?
        @err.puts "catamount: #{FRESH_WORKER_VAR} is set but is not <master pid>,<fd>,<fd>,<fd>"
        return Launcher::FAILED
      end
      @messages_w, @alive_r, @fork_r = fds.map do |fd|
        IO.for_fd(fd, autoclose: true).tap do |io|
          io.close_on_exec = true
          io.sync = true # a message is a line written at once, as through IO.pipe's end
        end
      end
      @master_pid = master
      @from_template = true
      @server = Native::Server.new(@config.native, rack_settings(options))
      Catamount.launcher = self
      worker_main(0, options, nil)
    end

    # Signals meant for the master (a `pkill` may reach every process of the tree), and INT
    # (Ctrl-C in a terminal reaches the whole group; the master stops the workers).
    def ignore_master_signals
      %w[INT TTIN TTOU USR1 USR2 URG].each { |sig| Signal.trap(sig, "IGNORE") }
    end

    # Starts the reactor and the pool; `:finished` arrives on `events` once the server ended.
    def start_serving(app, events)
      @server.start
      pool = start_pool(@server, app)
      Thread.new do
        @server.wait
      ensure
        events << :finished
      end
      pool
    end

    def serve_until_stopped(options, events)
      loop do
        case events.pop
        when :hup then reopen_worker_logs(options)
        when :term then @server.stop
        when :finished then break
        end
      end
    end

    # The pool stats, sent to the master now and every `worker_check_interval`.
    def start_pings(options)
      Thread.new do
        loop do
          @messages_w.write("p#{Process.pid}#{JSON.generate(@server.stats)}\n")
          sleep options[:worker_check_interval]
        end
      rescue IOError, SystemCallError
        nil
      end
    end

    # `idle_timeout` in a worker: tells the master when nothing arrived for that long, and
    # when something did again (checked every quarter of the limit, at most a second apart).
    def watch_idle_in_worker(limit)
      Thread.new do
        idle = false
        loop do
          now_idle = @server.idle_seconds >= limit
          @messages_w.write("i#{Process.pid}:#{now_idle ? 1 : 0}\n") if now_idle != idle
          idle = now_idle
          sleep(idle ? [limit / 4.0, 1].min : [limit - @server.idle_seconds, 0.05].max)
        end
      rescue IOError, SystemCallError
        nil
      end
    end

    def reopen_worker_logs(options)
      redirect_stdio(options, reopen: true) if options[:redirect_stdout] || options[:redirect_stderr]
    end

    # Worker 0 under fork_worker: it serves between a `0` and the next `-1` and forks only in
    # between, when its reactor and pool threads have ended (a fork copies only the thread that
    # calls it; a native thread holding a lock at that moment would leave it locked forever).
    # It begins stopped: the first workers are forked from it before it serves.
    def serve_as_template(options, app, events, hook_data)
      Thread.new do
        while (line = @fork_r.gets)
          command = Integer(line, exception: false)
          events << command if command
        end
      end
      state = :stopped
      pool = nil
      stopping = false
      commands = []
      loop do
        case (event = events.pop)
        when :hup then reopen_worker_logs(options)
        when :term
          stopping = true
          if state == :serving
            @server.stop
            state = :stopping
          end
        when :finished
          pool.join
          # Ended without being asked to (the reactor failed): this worker is done.
          stopping = true if state == :serving
          state = :stopped
          @config.run_hooks(:before_refork, log: @err, keyed: hook_data) unless stopping
        when Integer then commands << event
        end
        break if stopping && state == :stopped
        next if stopping

        state, pool = run_template_commands(commands, state, pool, options, app, events, hook_data)
      end
    end

    # Carries out the commands the state allows, in order; returns the new state and pool.
    # A fork waits until the server has stopped (`:finished`).
    def run_template_commands(commands, state, pool, options, app, events, hook_data)
      while (command = commands.first)
        if command == -2
          @config.run_hooks(:after_refork, log: @err, keyed: hook_data)
        elsif command.zero?
          break if state == :stopping

          if state == :stopped
            @server.rearm
            pool = start_serving(app, events)
            state = :serving
          end
        else
          if state == :serving
            @server.stop
            state = :stopping
          end
          break if state == :stopping

          fork_sibling(command, options, app) if command.positive?
        end
        commands.shift
      end
      [state, pool]
    end

    # Forks worker `index` twice over: the middle process exits at once, so the worker is
    # re-parented to the master (the subreaper) and never becomes worker 0's zombie.
    def fork_sibling(index, options, app)
      @config.run_hooks(:before_worker_fork, index, log: @err)
      middle = Process.fork do
        Process.fork do
          worker_main(index, options, app, sibling: true)
        ensure
          exit!(Launcher::FAILED)
        end
        exit!(Launcher::OK)
      rescue SystemCallError => e
        @err.puts "#{@log_prefix}! Could not fork worker #{index}: #{e.message}"
      ensure
        exit!(Launcher::FAILED) # never the app's at_exit hooks: they would run in a copy of worker 0
      end
      Process.wait(middle)
      @config.run_hooks(:after_worker_fork, index, log: @err)
    rescue SystemCallError => e
      @err.puts "#{@log_prefix}! Could not fork worker #{index}: #{e.message}"
    end
  end

  class Launcher
    include Cluster
  end
end
