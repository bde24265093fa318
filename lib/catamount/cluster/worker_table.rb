# frozen_string_literal: true

module Catamount
  module Cluster
    # The cluster master's books, and every decision made from them alone: which slots exist,
    # which phase each worker serves, the wait after failed boots, which worker missed its
    # check-in or boot deadline, which surplus worker goes first, which worker a phased restart
    # or a refork replaces next, when the master gives up.
    #
    # Pure: no fork, no signal, no IO, no clock. The master (master.rb) feeds it what happened
    # (forked, reported, checked in, booted, exited...) with the time `now` (monotonic seconds)
    # and carries out what it answers (send TERM or KILL to these, fork those indexes).
    # test/unit/test_worker_table.rb drives it with a fake clock.
    class WorkerTable
      # Waits between failed worker boots grow from 1 s to this, so a broken app never makes a
      # fork storm.
      MAX_BACKOFF = 30
      # A master whose workers failed this many boots in a row, none ever booted, gives up.
      HOPELESS_BOOTS = 4
      # Children reaped before any slot knew them, remembered at most this many.
      UNKNOWN_KEPT = 64

      # A worker as the master sees it. Times are monotonic seconds, except `started_wall` and
      # `checkin_wall` (for stats); `last_status` is the worker's pool stats from its latest
      # ping. `pid` is nil while worker 0 is forking it (`fork_worker`) and it has not reported.
      # `term_sent_at`: when the master asked it to stop (or killed it); it keeps its slot until
      # it is reaped, so its replacement takes the same index.
      Slot = Struct.new(:index, :pid, :phase, :started_at, :started_wall, :booted_at, :last_checkin, :checkin_wall,
                        :last_status, :term_sent_at, :idle, keyword_init: true) do
        def booted?
          !booted_at.nil?
        end

        def stopping?
          !term_sent_at.nil?
        end
      end

      # What `exited` found: the slot, and `:failed_boot` (with the `delay` before the next
      # spawn), `:died` (it had booted, nobody asked it to stop) or `:stopped`.
      Exit = Struct.new(:slot, :outcome, :delay)

      # What `fork_reported` found: `:unknown` (no slot waits for it: stop it), `:died` (it was
      # reaped already: a failed boot, `delay` as in Exit) or `:ok` (its slot has its pid now).
      Report = Struct.new(:outcome, :slot, :status, :delay)

      # What `expire` asks for: `:kill` a worker past its deadline (`missed` is `"boot"` or
      # `"check in"`), or `:replace_template` (stop worker 0, which did not fork `slot`).
      Expiry = Struct.new(:action, :slot, :missed, :limit, :template)

      attr_reader :slots, :phase, :count, :failed_boots
      # Workers booted since the master started, and workers started in place of one that
      # exited (died, killed, stopped by a phased restart or refork; not a culled one).
      attr_reader :boots, :restarts

      # The stats that are highs: a check-in brings the high of its interval, the slot keeps the
      # highest until `reset_highs` (restarting from the value of `HIGHS[key]` now).
      HIGHS = { backlog_max: :backlog, reactor_max: :connections_open }.freeze

      # Whether workers other than 0 are forked by worker 0 (fork_worker, or a phased restart of
      # a preloaded app): worker 0 then stays when culling, and its death clears the slots it
      # still owed.
      attr_accessor :from_template

      # `refork_after`: `fork_worker`'s request count (0: worker 0 never reforks by itself).
      def initialize(count:, now:, refork_after: 0)
        @slots = []
        @count = count
        @refork_after = refork_after
        @phase = 0
        @failed_boots = 0
        @next_spawn_at = now
        @ever_booted = false
        @announced = false
        @phased = false
        @reforking = false
        @from_template = false
        @force_at = nil
        @reaped_unknown = {}
        @boots = 0
        @restarts = 0
        # Indexes whose worker exited (and was not culled): the next worker there is a restart.
        @vacated = []
        # Stopping workers that said so (`drained`: they accept nothing more, may still finish
        # requests and drain): off the slots, on the books until reaped.
        @draining = []
      end

      # Whether a phased restart or refork is under way.
      def phased?
        @phased
      end

      def reforking?
        @reforking
      end

      def empty?
        @slots.empty? && @draining.empty?
      end

      # Every worker process known: the slots' and the draining ones.
      def all_workers
        @slots + @draining
      end

      def find_pid(pid)
        @slots.find { |s| s.pid == pid } || @draining.find { |s| s.pid == pid }
      end

      # Worker 0 when it can fork siblings: booted and not stopping.
      def template
        @slots.find { |s| s.index.zero? && s.booted? && !s.stopping? }
      end

      def booted_count
        @slots.count(&:booted?)
      end

      def old_count
        @slots.count { |s| s.phase < @phase }
      end

      # --- events -----------------------------------------------------------------------------

      # The master started a worker for `index` (pid known).
      def forked(index, pid, now:, wall:)
        add(index, pid, now, wall)
      end

      # Worker 0 was asked to fork these indexes: slots without a pid until they report.
      def fork_requested(indexes, now:, wall:)
        indexes.map { |index| add(index, nil, now, wall) }
      end

      # `f<pid>:<index>`: a worker forked by worker 0 gives its pid. A child already reaped (it
      # died right after reporting) is a failed boot.
      def fork_reported(pid, index, now:)
        slot = @slots.find { |s| s.index == index && s.pid.nil? }
        return Report.new(:unknown) unless slot

        if (status = @reaped_unknown.delete(pid))
          @slots.delete(slot)
          slot.pid = pid
          return Report.new(:died, slot, status, failed_boot(now))
        end
        slot.pid = pid
        slot.last_checkin = now
        Report.new(:ok, slot)
      end

      # Any message from `pid`: its slot (nil if none) has checked in.
      def checked_in(pid, now:, wall:)
        slot = find_pid(pid)
        return unless slot

        slot.last_checkin = now
        slot.checkin_wall = wall
        slot
      end

      # `b`: the worker serves. True the first time every wanted worker has booted (when
      # `after_booted` hooks run).
      def booted(slot, now:)
        @boots += 1
        slot.booted_at = now
        @failed_boots = 0
        @ever_booted = true
        return false if @announced || booted_count < @count

        @announced = true
      end

      # `p`: the worker's pool stats (nil: unreadable, the last ones are kept). True when this
      # makes worker 0 due for a refork (`refork_due?`).
      def status(slot, stats)
        slot.last_status = keep_highs(slot.last_status, stats) if stats
        refork_due?(slot)
      end

      # `stats(reset_max: true)`: each slot's highs restart from its current values.
      def reset_highs
        @slots.each do |slot|
          status = slot.last_status
          next unless status.is_a?(Hash)

          HIGHS.each { |high, now| status[high] = status[now] if status.key?(high) }
        end
      end

      # `i`: the worker has been idle for `idle_timeout` (true), or is busy again.
      def idle(slot, idle)
        slot.idle = idle
      end

      # `d`: a stopping worker accepts nothing more; its last requests and its drain
      # (drain.rb, up to `drain_timeout`) may still take a while. Its index is free for a
      # replacement now (a phased restart goes on without waiting for either); it stays on the
      # books, to be reaped, or killed past `worker_shutdown_timeout`. Nil unless it was
      # stopping.
      def drained(slot)
        return unless slot.stopping? && @slots.delete(slot)

        @draining << slot
        @vacated << slot.index if slot.index < @count && !@vacated.include?(slot.index)
        slot
      end

      # A child was reaped. Nil when no slot knew its pid (kept: a worker forked by worker 0 can
      # die before its report is read).
      def exited(pid, status, now:)
        slot = find_pid(pid)
        return remember_unknown(pid, status) unless slot
        return Exit.new(slot, :stopped) if @draining.delete(slot)

        @slots.delete(slot)
        @vacated << slot.index if slot.index < @count && !@vacated.include?(slot.index)
        # Workers worker 0 was asked to fork and did not report are asked of the next one.
        @slots.reject! { |s| s.pid.nil? } if slot.index.zero? && @from_template
        if slot.stopping?
          Exit.new(slot, :stopped)
        elsif slot.booted?
          Exit.new(slot, :died)
        else
          Exit.new(slot, :failed_boot, failed_boot(now))
        end
      end

      # Counts a worker that never booted and pushes the next spawn back (1, 2, 4, ... s up to
      # MAX_BACKOFF); returns the wait.
      def failed_boot(now)
        @failed_boots += 1
        delay = [2**(@failed_boots - 1), MAX_BACKOFF].min
        @next_spawn_at = now + delay
        delay
      end

      # No worker ever booted and HOPELESS_BOOTS boots failed in a row.
      def hopeless?
        !@ever_booted && @failed_boots >= HOPELESS_BOOTS
      end

      # The master asked this worker to stop (TERM); the first time counts.
      def stopping(slot, now:)
        slot.term_sent_at ||= now
        slot
      end

      # --- decisions ---------------------------------------------------------------------------

      # Workers past their deadline, marked as stopping: a booted worker silent for
      # `worker_timeout`, one not booted within `boot_timeout`. A slot worker 0 did not fill
      # within `boot_timeout` means worker 0 cannot fork (a request it waits for never ends):
      # worker 0 is stopped instead (its death clears the slots it owed).
      def expire(now:, worker_timeout:, boot_timeout:)
        @slots.filter_map do |slot|
          next if slot.stopping?

          limit = slot.booted? ? worker_timeout : boot_timeout
          next if now - (slot.last_checkin || slot.started_at) < limit

          if slot.pid
            stopping(slot, now: now)
            next Expiry.new(:kill, slot, slot.booted? ? "check in" : "boot", limit)
          end
          forker = @slots.find { |s| s.index.zero? && s.pid && !s.stopping? }
          next unless forker

          stopping(forker, now: now)
          Expiry.new(:replace_template, slot, "fork", limit, forker)
        end
      end

      # TTIN (+1) / TTOU (-1): the new worker count (never below one), or nil if unchanged. A
      # larger cluster may spawn at once, whatever the back-off.
      def resize(delta, now:)
        count = [@count + delta, 1].max
        return if count == @count

        @count = count
        # A culled index that grows back later is a new worker, not a restart.
        @vacated.reject! { |i| i >= count }
        @next_spawn_at = now if delta.positive?
        count
      end

      # The workers beyond the wanted count, marked as stopping: the youngest first, or the
      # oldest with `strategy` "oldest". Worker 0 stays while others are forked from it.
      def cull(strategy, now:)
        live = @slots.reject(&:stopping?)
        surplus = live.size - @count
        return [] if surplus < 1

        live.reject! { |s| s.index.zero? } if @from_template
        by_age = live.sort_by(&:started_at)
        by_age.reverse! unless strategy.to_s == "oldest"
        by_age.first(surplus).each { |s| stopping(s, now: now) }
      end

      # The indexes to start now (the lowest free ones; a stopping worker still holds its
      # index), or nil while a failed boot's wait runs.
      def to_spawn(now)
        return if now < @next_spawn_at

        missing = [@count - @slots.size, 0].max
        taken = @slots.map(&:index)
        (0..).lazy.reject { |i| taken.include?(i) }.first(missing)
      end

      # USR1: a new phase; workers of older phases are replaced one by one (`phase_step`).
      def begin_phased_restart
        @phase += 1
        @phased = true
        @reforking = false
        @phase
      end

      # URG, or worker 0 past `fork_worker` requests: a new phase that worker 0 already serves
      # (the others are forked from it as it is now). Nil when worker 0 cannot fork.
      def begin_refork
        forker = template
        return unless forker

        @phase += 1
        forker.phase = @phase
        @phased = true
        @reforking = true
        forker
      end

      # `fork_worker N`: worker 0 of the first phase has served N (`refork_after`) requests,
      # and no phased restart or refork runs.
      def refork_due?(slot)
        return false unless @refork_after.positive? && slot.index.zero? && slot.phase.zero? && slot.booted?
        return false if @phased || slot.stopping?

        slot.last_status.is_a?(Hash) && slot.last_status[:requests_count].to_i >= @refork_after
      end

      # The next step of a phased restart or refork, once every wanted worker is there, booted
      # and not stopping (so capacity never drops by more than one worker): `[:stop, slot]`
      # for the lowest index of an older phase (marked as stopping), else `[:done, :refork]` /
      # `[:done, :phased]` (the pass ended). Nil while nothing is to be done.
      def phase_step(now:)
        return unless @phased
        return unless @slots.size >= @count && @slots.all? { |s| s.booted? && !s.stopping? }

        old = @slots.select { |s| s.phase < @phase }.min_by(&:index)
        return [:stop, stopping(old, now: now)] if old

        @phased = false
        kind = @reforking ? :refork : :phased
        @reforking = false
        [:done, kind]
      end

      # `idle_timeout`: every wanted worker is there, none stopping, all idle (never during a
      # phased restart).
      def all_idle?
        return false if @phased || @slots.size < @count

        @slots.all? { |s| s.idle && !s.stopping? }
      end

      # A stop or a hot restart: every worker marked as stopping (returned). `force_after`
      # (seconds) kills whatever is left then.
      def stop_all(now:, force_after: nil)
        @force_at = force_after ? now + force_after : nil
        @slots.each { |s| stopping(s, now: now) }
      end

      # Stopping workers to KILL: stopping for `shutdown_timeout`, or all once `force_at` passed.
      # A slot that never got a pid is dropped (nothing to kill, nothing to wait for).
      def stragglers(now:, shutdown_timeout:)
        (@slots + @draining).select do |slot|
          next false unless slot.stopping?
          next false unless now - slot.term_sent_at >= shutdown_timeout || (@force_at && now >= @force_at)
          next true if slot.pid

          @slots.delete(slot)
          false
        end
      end

      # How long the master may wait for a message: until the next spawn when workers are
      # missing, at most `interval` (one second while stopping, to send KILLs on time), at
      # least 50 ms.
      def wait_time(now:, interval:, stopping:)
        return 1.0 if stopping

        wait = [interval, @next_spawn_at - now].min if @slots.size < @count
        [wait || interval, 0.05].max
      end

      private

      def add(index, pid, now, wall)
        @restarts += 1 if @vacated.delete(index)
        # `last_checkin` starts at the fork, as Puma's does (plugins parse it as a time).
        slot = Slot.new(index: index, pid: pid, phase: @phase, started_at: now, started_wall: wall, checkin_wall: wall)
        @slots << slot
        slot
      end

      # The check-in's stats, with each high kept at the highest seen since the last reset.
      def keep_highs(last, stats)
        return stats unless last.is_a?(Hash) && stats.is_a?(Hash)

        HIGHS.each_key do |high|
          stats[high] = [stats[high], last[high]].max if stats[high].is_a?(Integer) && last[high].is_a?(Integer)
        end
        stats
      end

      def remember_unknown(pid, status)
        @reaped_unknown[pid] = status
        @reaped_unknown.shift while @reaped_unknown.size > UNKNOWN_KEPT
        nil
      end
    end
  end
end
