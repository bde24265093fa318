# frozen_string_literal: true

# The cluster master's books (Catamount::Cluster::WorkerTable) driven by events and a clock
# the test holds: no fork, no sleep, no built server needed.
require "minitest/autorun"
require_relative "../../lib/catamount/cluster/worker_table"

class TestWorkerTable < Minitest::Test
  parallelize_me!

  Table = Catamount::Cluster::WorkerTable
  WALL = Time.at(0)

  def setup
    @now = 100.0
    @next_pid = 1000
  end

  def table(count = 2, refork_after: 0)
    Table.new(count: count, now: @now, refork_after: refork_after)
  end

  # Forks every missing index and returns the new slots.
  def fork_missing(table)
    table.to_spawn(@now).map { |index| table.forked(index, @next_pid += 1, now: @now, wall: WALL) }
  end

  def boot_all(table)
    table.slots.reject(&:booted?).each { |slot| table.booted(slot, now: @now) }
  end

  def booted_cluster(count = 2, refork_after: 0)
    t = table(count, refork_after: refork_after)
    fork_missing(t)
    boot_all(t)
    t
  end

  # A phased restart run to its end: every worker replaced by a booted one of the new phase.
  def finish_phased_restart(table)
    table.begin_phased_restart
    while (step = table.phase_step(now: @now)) && step.first == :stop
      table.exited(step.last.pid, exited_status, now: @now)
      boot_all(table.tap { fork_missing(table) })
    end
    table
  end

  def exited_status
    :status # the table only hands it back
  end

  def test_spawns_the_lowest_free_indexes_and_a_stopping_worker_keeps_its_index
    t = table(3)
    assert_equal [0, 1, 2], t.to_spawn(@now)
    fork_missing(t)
    assert_equal [], t.to_spawn(@now)
    one = t.slots[1]
    t.stopping(one, now: @now)
    assert_equal [], t.to_spawn(@now), "a stopping worker holds its slot until it is reaped"
    t.exited(one.pid, exited_status, now: @now)
    assert_equal [1], t.to_spawn(@now)
  end

  def test_last_checkin_starts_at_the_fork
    t = table(1)
    forked_at = Time.at(5)
    slot = t.forked(0, 10, now: @now, wall: forked_at)
    assert_equal forked_at, slot.checkin_wall, "Puma's last_checkin is set when the worker is made"
    t.checked_in(10, now: @now, wall: Time.at(7))
    assert_equal Time.at(7), slot.checkin_wall
  end

  def test_failed_boots_back_off_exponentially_up_to_the_cap
    t = table(1)
    delays = Array.new(7) do
      slot = fork_missing(t).first
      exit = t.exited(slot.pid, exited_status, now: @now)
      assert_equal :failed_boot, exit.outcome
      assert_nil t.to_spawn(@now + exit.delay - 0.001), "nothing is forked before the wait ends"
      @now += exit.delay
      exit.delay
    end
    assert_equal [1, 2, 4, 8, 16, 30, 30], delays
  end

  def test_gives_up_after_repeated_failed_boots_only_if_no_worker_ever_booted
    t = table(1)
    (Table::HOPELESS_BOOTS - 1).times do
      @now += t.exited(fork_missing(t).first.pid, exited_status, now: @now).delay
      refute t.hopeless?
    end
    t.exited(fork_missing(t).first.pid, exited_status, now: @now)
    assert t.hopeless?

    t = booted_cluster(1)
    t.exited(t.slots.first.pid, exited_status, now: @now) # a booted worker died
    6.times { @now += t.exited(fork_missing(t).first.pid, exited_status, now: @now).delay }
    refute t.hopeless?, "a cluster that once served keeps trying"
  end

  def test_a_boot_resets_the_back_off
    t = table(1)
    @now += t.exited(fork_missing(t).first.pid, exited_status, now: @now).delay
    @now += t.exited(fork_missing(t).first.pid, exited_status, now: @now).delay
    boot_all(t.tap { fork_missing(t) })
    assert_equal 0, t.failed_boots
    exit = t.exited(t.slots.first.pid, exited_status, now: @now)
    assert_equal :died, exit.outcome
    assert_nil exit.delay
    assert_equal [0], t.to_spawn(@now), "a worker that died after booting is replaced at once"
    assert_equal 1, t.exited(fork_missing(t).first.pid, exited_status, now: @now).delay
  end

  def test_exit_outcomes
    t = booted_cluster(2)
    zero, one = t.slots
    t.stopping(one, now: @now)
    assert_equal :stopped, t.exited(one.pid, exited_status, now: @now).outcome
    assert_equal :died, t.exited(zero.pid, exited_status, now: @now).outcome
    assert_nil t.exited(4242, exited_status, now: @now), "an unknown child"
  end

  def test_after_booted_is_announced_once_when_every_worker_booted
    t = table(2)
    a, b = fork_missing(t)
    refute t.booted(a, now: @now)
    assert t.booted(b, now: @now)
    t.exited(a.pid, exited_status, now: @now)
    refute t.booted(fork_missing(t).first, now: @now), "only the first time"
  end

  def test_check_in_and_boot_timeouts
    t = table(2)
    zero, one = fork_missing(t)
    t.booted(zero, now: @now)
    @now += 9
    t.checked_in(zero.pid, now: @now, wall: WALL)
    assert_empty t.expire(now: @now, worker_timeout: 10, boot_timeout: 20)
    assert_empty t.expire(now: @now + 6, worker_timeout: 10, boot_timeout: 20),
                 "the check-in at +9 restarted worker 0's clock: 15 s since the fork, 6 since it checked in"
    @now += 11
    expired = t.expire(now: @now, worker_timeout: 10, boot_timeout: 20)
    assert_equal [[:kill, 0, "check in"], [:kill, 1, "boot"]], expired.map { |e| [e.action, e.slot.index, e.missed] }
    assert zero.stopping? && one.stopping?
    assert_empty t.expire(now: @now + 100, worker_timeout: 10, boot_timeout: 20), "each is killed once"
  end

  def test_a_slot_worker_0_did_not_fill_in_time_replaces_worker_0_once
    t = table(3)
    t.from_template = true
    zero = t.forked(0, 10, now: @now, wall: WALL)
    t.booted(zero, now: @now)
    assert_equal [1, 2], t.to_spawn(@now)
    t.fork_requested([1, 2], now: @now, wall: WALL)
    @now += 30
    t.checked_in(zero.pid, now: @now, wall: WALL)
    expired = t.expire(now: @now, worker_timeout: 60, boot_timeout: 20)
    assert_equal 1, expired.size, "worker 0 is stopped once, not once per slot it owes"
    assert_equal :replace_template, expired.first.action
    assert_equal zero, expired.first.template
    assert zero.stopping?
    t.exited(zero.pid, exited_status, now: @now)
    assert t.empty?, "the slots worker 0 owed go with it"
  end

  def test_a_forked_worker_reports_its_pid
    t = table(2)
    t.from_template = true
    fork_missing(t)
    boot_all(t)
    t.exited(t.slots[1].pid, exited_status, now: @now)
    t.fork_requested([1], now: @now, wall: WALL)
    assert_equal :unknown, t.fork_reported(77, 2, now: @now).outcome, "no slot waits for index 2"
    report = t.fork_reported(77, 1, now: @now)
    assert_equal :ok, report.outcome
    assert_equal 77, report.slot.pid
    assert_equal :unknown, t.fork_reported(78, 1, now: @now).outcome, "the slot is filled"
  end

  def test_a_forked_worker_reaped_before_its_report_is_a_failed_boot
    t = table(2)
    t.from_template = true
    fork_missing(t)
    boot_all(t)
    t.stopping(t.slots[1], now: @now)
    t.exited(t.slots[1].pid, exited_status, now: @now)
    t.fork_requested([1], now: @now, wall: WALL)
    assert_nil t.exited(88, :st, now: @now)
    report = t.fork_reported(88, 1, now: @now)
    assert_equal [:died, :st, 1], [report.outcome, report.status, report.delay]
    assert_equal [1], t.to_spawn(@now + 1)
  end

  # worker_boots counts every boot; worker_restarts every worker started in place of one that
  # exited (died, killed, replaced by a phased restart), never a culled index grown back.
  def test_boots_and_restarts_are_counted
    t = booted_cluster(2)
    assert_equal [2, 0], [t.boots, t.restarts]
    t.exited(t.slots[1].pid, exited_status, now: @now) # died
    boot_all(t.tap { fork_missing(t) })
    assert_equal [3, 1], [t.boots, t.restarts]
    finish_phased_restart(t)
    assert_equal [5, 3], [t.boots, t.restarts]
    t.resize(-1, now: @now)
    culled = t.cull("youngest", now: @now).first
    t.exited(culled.pid, exited_status, now: @now)
    t.resize(1, now: @now)
    boot_all(t.tap { fork_missing(t) })
    assert_equal [6, 3], [t.boots, t.restarts], "a culled index grown back is not a restart"
  end

  # A check-in brings the highs of its interval; the slot keeps the highest until reset_highs,
  # which restarts them from the current values.
  def test_highs_are_kept_across_check_ins_until_reset
    t = booted_cluster(1)
    slot = t.slots.first
    t.status(slot, { backlog: 1, backlog_max: 5, connections_open: 2, reactor_max: 9 })
    t.status(slot, { backlog: 0, backlog_max: 3, connections_open: 1, reactor_max: 4 })
    assert_equal [5, 9], slot.last_status.values_at(:backlog_max, :reactor_max)
    t.reset_highs
    assert_equal [0, 1], slot.last_status.values_at(:backlog_max, :reactor_max)
    t.status(slot, { backlog: 0, backlog_max: 2, connections_open: 1, reactor_max: 1 })
    assert_equal [2, 1], slot.last_status.values_at(:backlog_max, :reactor_max)
  end

  def test_culling_picks_the_youngest_by_default_and_the_oldest_when_asked
    %w[youngest oldest].each do |strategy|
      t = table(3)
      3.times { |i| t.forked(i, 10 + i, now: @now + i, wall: WALL) }
      assert_nil t.resize(0, now: @now)
      assert_equal 2, t.resize(-1, now: @now)
      culled = t.cull(strategy, now: @now)
      assert_equal [strategy == "oldest" ? 0 : 2], culled.map(&:index)
      assert culled.first.stopping?
      assert_empty t.cull(strategy, now: @now), "a stopping worker is not culled twice"
    end
  end

  def test_worker_0_is_never_culled_while_others_are_forked_from_it
    t = table(2)
    t.from_template = true
    t.forked(0, 10, now: @now + 5, wall: WALL) # the youngest
    t.forked(1, 11, now: @now, wall: WALL)
    t.resize(-1, now: @now)
    assert_equal [1], t.cull("youngest", now: @now).map(&:index)
  end

  def test_worker_count_never_drops_below_one_and_growing_skips_the_back_off
    t = table(1)
    assert_nil t.resize(-1, now: @now)
    @now += t.exited(fork_missing(t).first.pid, exited_status, now: @now).delay - 0.5
    assert_nil t.to_spawn(@now)
    assert_equal 2, t.resize(1, now: @now)
    assert_equal [0, 1], t.to_spawn(@now)
  end

  def test_phased_restart_replaces_the_lowest_old_index_one_at_a_time
    t = booted_cluster(3)
    assert_nil t.phase_step(now: @now), "no phased restart asked for"
    assert_equal 1, t.begin_phased_restart
    replaced = []
    loop do
      step = t.phase_step(now: @now)
      break assert_equal([:done, :phased], step) if step.first == :done

      assert_equal :stop, step.first
      replaced << step.last.index
      assert_nil t.phase_step(now: @now), "one at a time: the next waits for the replacement"
      t.exited(step.last.pid, exited_status, now: @now)
      assert_nil t.phase_step(now: @now), "and for it to boot"
      new = fork_missing(t).first
      assert_equal 1, new.phase
      t.booted(new, now: @now)
    end
    assert_equal [0, 1, 2], replaced
    refute t.phased?
    assert_nil t.phase_step(now: @now)
  end

  # A stopping worker that said so (it accepts nothing more) frees its index at once: the
  # phased restart boots its replacement and goes on while it drains; it stays on the books
  # (KILLed past worker_shutdown_timeout, waited for by a stop) until it is reaped.
  def test_a_draining_worker_frees_its_index_but_stays_on_the_books
    t = booted_cluster(2)
    t.begin_phased_restart
    _, old = t.phase_step(now: @now)
    assert_nil t.drained(t.slots.last), "only a stopping worker drains"
    assert_same old, t.drained(old)
    assert_nil t.drained(old), "once"
    assert_equal [old.index], t.to_spawn(@now)
    assert_includes t.all_workers, old
    assert_same old, t.find_pid(old.pid)
    new = fork_missing(t).first
    t.booted(new, now: @now)
    assert_equal 1, t.restarts
    step, second = t.phase_step(now: @now)
    assert_equal :stop, step, "the restart goes on while the first old worker drains"
    refute_equal old, second

    @now += 31
    assert_includes t.stragglers(now: @now, shutdown_timeout: 30), old
    assert_equal :stopped, t.exited(old.pid, exited_status, now: @now).outcome
    refute_includes t.all_workers, old
    assert_equal 1, t.restarts, "its replacement was counted once"
    t.stop_all(now: @now)
    t.slots.dup.each { |s| t.exited(s.pid, exited_status, now: @now) }
    assert t.empty?
  end

  def test_a_stop_waits_for_draining_workers
    t = booted_cluster(2)
    t.stop_all(now: @now)
    one, two = t.slots
    t.drained(one)
    t.exited(two.pid, exited_status, now: @now)
    refute t.empty?, "a draining worker is still to be reaped"
    t.exited(one.pid, exited_status, now: @now)
    assert t.empty?
  end

  def test_a_refork_keeps_worker_0_and_replaces_the_others
    t = booted_cluster(3)
    assert_equal 0, t.begin_refork.index
    assert t.reforking?
    step = t.phase_step(now: @now)
    assert_equal [:stop, 1], [step.first, step.last.index]
    t.exited(step.last.pid, exited_status, now: @now)
    t.booted(fork_missing(t).first, now: @now)
    step = t.phase_step(now: @now)
    assert_equal [:stop, 2], [step.first, step.last.index]
    t.exited(step.last.pid, exited_status, now: @now)
    t.booted(fork_missing(t).first, now: @now)
    assert_equal [:done, :refork], t.phase_step(now: @now)
    refute t.reforking?
  end

  def test_no_refork_without_a_booted_worker_0
    t = table(2)
    fork_missing(t)
    assert_nil t.begin_refork
    t.booted(t.slots[0], now: @now)
    t.stopping(t.slots[0], now: @now)
    assert_nil t.begin_refork, "a stopping worker 0 cannot fork"
    assert_equal 0, t.phase
  end

  def test_automatic_refork_after_n_requests_of_the_first_worker_0_only
    t = booted_cluster(2, refork_after: 10)
    zero, one = t.slots
    refute t.status(zero, { requests_count: 9 })
    refute t.status(one, { requests_count: 10 }), "only worker 0 is forked from"
    assert t.status(zero, { requests_count: 10 })
    assert t.status(zero, nil), "unreadable stats keep the last ones"
    assert_equal({ requests_count: 10 }, zero.last_status)

    t = booted_cluster(2)
    refute t.status(t.slots.first, { requests_count: 10 }), "fork_worker without a count never reforks by itself"
  end

  # Each condition alone, the others holding: worker 0 served enough requests every time.
  def test_no_automatic_refork_during_a_phase_in_a_later_phase_or_from_a_stopping_worker_0
    many = { requests_count: 10 }

    t = finish_phased_restart(booted_cluster(2, refork_after: 10))
    zero = t.slots.find { |s| s.index.zero? }
    assert_equal 1, zero.phase
    refute t.phased?
    refute t.status(zero, many), "worker 0 of a later phase"

    t = booted_cluster(2, refork_after: 10)
    zero = t.slots.first
    t.begin_phased_restart # worker 0 still serves phase 0
    assert_equal 0, zero.phase
    refute t.status(zero, many), "during a phased restart"

    t = booted_cluster(2, refork_after: 10)
    zero = t.slots.first
    t.stopping(zero, now: @now)
    refute t.phased?
    refute t.status(zero, many), "a stopping worker 0"
  end

  def test_all_idle_needs_every_worker_there_and_idle
    t = booted_cluster(2)
    zero, one = t.slots
    t.idle(zero, true)
    refute t.all_idle?
    t.idle(one, true)
    assert t.all_idle?
    t.idle(one, false)
    refute t.all_idle?, "busy again"
    t.idle(one, true)
    t.resize(1, now: @now)
    refute t.all_idle?, "a worker is missing"
    t.resize(-1, now: @now)
    assert t.all_idle?
    t.begin_phased_restart
    refute t.all_idle?, "not during a phased restart"
  end

  def test_an_idle_worker_that_is_stopping_is_not_idle
    t = booted_cluster(2)
    t.slots.each { |slot| t.idle(slot, true) }
    assert t.all_idle?
    t.stopping(t.slots.last, now: @now)
    refute t.all_idle?
  end

  def test_stragglers_are_killed_after_the_shutdown_timeout_or_the_forced_stop
    t = booted_cluster(2)
    t.from_template = true
    t.fork_requested([2], now: @now, wall: WALL)
    stopped = t.stop_all(now: @now, force_after: 5)
    assert_equal 3, stopped.size
    assert_empty t.stragglers(now: @now + 4, shutdown_timeout: 30)
    assert_equal [0, 1], t.stragglers(now: @now + 5, shutdown_timeout: 30).map(&:index)
    assert_equal 2, t.slots.size, "a slot without a pid has nothing to wait for"

    t = booted_cluster(1)
    t.stop_all(now: @now)
    assert_empty t.stragglers(now: @now + 29, shutdown_timeout: 30)
    assert_equal 1, t.stragglers(now: @now + 30, shutdown_timeout: 30).size
  end

  def test_wait_time
    t = table(2)
    assert_in_delta 0.05, t.wait_time(now: @now, interval: 5, stopping: false), 1e-9, "missing workers: spawn now"
    @now += t.exited(fork_missing(t).first.pid, exited_status, now: @now).delay
    fork_missing(t)
    assert_equal 5, t.wait_time(now: @now, interval: 5, stopping: false)
    assert_equal 1.0, t.wait_time(now: @now, interval: 5, stopping: true)
    t.exited(t.slots.first.pid, exited_status, now: @now) # waits 2 s now
    assert_equal 2, t.wait_time(now: @now, interval: 5, stopping: false)
  end
end
