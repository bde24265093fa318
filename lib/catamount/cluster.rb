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
  # `worker_check_interval` (a worker silent for `worker_timeout` is killed and replaced).
  # Workers hold the read end of a second pipe the master writes nothing to: when the master
  # dies it closes, and the workers stop at once.
  #
  # Mixed into Launcher: it uses the launcher's logging, app loading and pidfile helpers.
  module Cluster
    # A worker as the master sees it.
    # Times are monotonic seconds, except `started_wall` and `checkin_wall` (for stats);
    # `last_status` is the worker's pool stats from its latest ping.
    Worker = Struct.new(:index, :pid, :phase, :started_at, :started_wall, :booted_at, :last_checkin, :checkin_wall,
                        :last_status, :term_sent_at, keyword_init: true) do
      def booted?
        !booted_at.nil?
      end
    end

    # Waits between failed worker boots grow from 1 s to this, so a broken app never makes a
    # fork storm.
    MAX_BACKOFF = 30
    # A master whose workers failed this many boots in a row, none ever booted, gives up.
    HOPELESS_BOOTS = 4

    private

    def run_cluster(options)
      @log_prefix = "[#{Process.pid}] "
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

    def master_loop(options, app)
      @messages_r, @messages_w = IO.pipe
      @alive_r, @alive_w = IO.pipe
      @workers = []
      @pending_signals = []
      @failed_boots = 0
      @next_spawn_at = monotonic
      @ever_booted = false
      @booted_announced = false
      @worker_count = options[:workers]
      @started_at = Time.now
      @phase = 0
      @phased_restart = false
      @timers = []
      @request = lambda do |what|
        @pending_signals << what
        wake_master
      end
      (%w[TERM INT CHLD HUP TTIN TTOU] + restart_signals).each do |sig|
        Signal.trap(sig) { @request.call(sig) }
      end
      # The master prints its backtraces from its loop: it starts no thread.
      trap_backtrace_signal { @request.call("backtraces") }
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
        return stopping if stopping
        return begin_phased_restart(options) unless @preload

        log "* phased-restart called but not available, restarting normally."
        return begin_hot_restart
      when "USR2"
        return stopping || begin_hot_restart
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

      by_age = live.sort_by(&:started_at)
      by_age.reverse! unless options[:worker_culling_strategy].to_s == "oldest"
      by_age.first(surplus).each do |w|
        log "- Worker #{w.index} (PID: #{w.pid}) terminating: worker count lowered"
        stop_worker(w)
      end
    end

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
    def begin_phased_restart(options)
      @phase += 1
      @phased_restart = true
      log "- Starting phased worker restart, phase: #{@phase}"
      dir = restart_directory(options)
      if dir != Dir.pwd
        log "+ Changing to #{dir}"
        Dir.chdir(dir)
      end
      nil
    end

    def phased_restart_step
      return unless @phased_restart
      return unless @workers.size >= @worker_count && @workers.all? { |w| w.booted? && !w.term_sent_at }

      old = @workers.select { |w| w.phase < @phase }.min_by(&:index)
      if old
        log "- Stopping #{old.pid} for phased upgrade..."
        stop_worker(old)
      else
        @phased_restart = false
        log "- Phased restart complete, phase: #{@phase}"
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
      worker = @workers.find { |w| w.pid == pid }
      return if kind == "!" || worker.nil?

      worker.last_checkin = monotonic
      worker.checkin_wall = Time.now
      return record_status(worker, line) if kind == "p"
      return unless kind == "b"

      worker.booted_at = monotonic
      @failed_boots = 0
      @ever_booted = true
      log format("- Worker %d (PID: %d) booted in %.2fs, phase: %d", worker.index, pid, worker.booted_at - worker.started_at, worker.phase)
      return if @booted_announced || @workers.count(&:booted?) < @worker_count

      @booted_announced = true
      @config.run_hooks(:after_booted, log: @err)
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
        next unless worker

        @workers.delete(worker)
        unless worker.booted? || worker.term_sent_at
          @failed_boots += 1
          delay = [2**(@failed_boots - 1), MAX_BACKOFF].min
          @next_spawn_at = monotonic + delay
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
    def check_timeouts(options)
      now = monotonic
      @workers.each do |w|
        next if w.term_sent_at

        limit = w.booted? ? options[:worker_timeout] : options[:worker_boot_timeout]
        next if now - (w.last_checkin || w.started_at) < limit

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

      missing = @worker_count - @workers.size
      return if missing < 1

      nakayoshi_gc if options[:nakayoshi_fork]
      taken = @workers.map(&:index)
      (0..).lazy.reject { |i| taken.include?(i) }.first(missing).each do |index|
        spawn_worker(index, options, app)
      end
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
      @workers.each do |w|
        next unless w.term_sent_at
        next unless now - w.term_sent_at >= limit || (@force_at && now >= @force_at)

        kill(w.pid, "KILL")
      end
    end

    def signal_workers(sig)
      @workers.each { |w| kill(w.pid, sig) }
    end

    def kill(pid, sig)
      Process.kill(sig, pid)
    rescue Errno::ESRCH
      nil
    end

    # --- in the worker process -------------------------------------------------------------

    def worker_main(index, options, app)
      @log_prefix = "[#{Process.pid}] "
      @in_worker = true
      @timers = nil
      master = Process.ppid
      @alive_w.close
      @messages_r.close
      Signal.trap("INT", "IGNORE")
      Signal.trap("CHLD", "DEFAULT")
      trap_backtrace_signal
      # Meant for the master (a `pkill` may reach every process of the tree).
      %w[TTIN TTOU USR1 USR2].each { |sig| Signal.trap(sig, "IGNORE") }
      stop = Queue.new
      Signal.trap("TERM") { stop << :term }
      Signal.trap("HUP") { stop << :hup }
      tag = options[:tag] || File.basename(Dir.pwd)
      Process.setproctitle("catamount: cluster worker #{index}: #{master}#{tag.empty? ? '' : " [#{tag}]"}")
      Thread.new do
        @alive_r.read # returns when the master is gone
        @err.puts "#{@log_prefix}! Detected the master died, stopping"
        exit!(Launcher::FAILED)
      end
      hook_data = Hash.new { |h, k| h[k] = {} }
      @config.run_hooks(:before_worker_boot, index, log: @err, keyed: hook_data)
      app ||= prepare_app(options)
      exit!(Launcher::FAILED) unless app

      @server.become_worker
      @server.start
      pool = start_pool(@server, app)
      Thread.new { @server.wait; stop << :finished }
      @messages_w.write("b#{Process.pid}:#{index}\n")
      @started_at = Time.now.utc
      Thread.new do
        loop do
          @messages_w.write("p#{Process.pid}#{JSON.generate(@server.stats)}\n")
          sleep options[:worker_check_interval]
        end
      rescue IOError, SystemCallError
        nil
      end
      loop do
        case stop.pop
        when :hup
          redirect_stdio(options, reopen: true) if options[:redirect_stdout] || options[:redirect_stderr]
        when :term
          @server.stop
        when :finished
          break
        end
      end
      pool.join
      @config.run_hooks(:before_worker_shutdown, index, log: @err, keyed: hook_data)
      $stdout.flush
      $stderr.flush
      exit!(Launcher::OK)
    rescue Exception => e # rubocop:disable Lint/RescueException -- a worker must never run the master's code after a fork
      @err.puts "#{@log_prefix}! Unable to start worker: #{e.message} (#{e.class})"
      exit!(Launcher::FAILED)
    end
  end

  class Launcher
    include Cluster
  end
end
