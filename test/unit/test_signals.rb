# frozen_string_literal: true

# The cluster's signal rules (Catamount::Cluster::Signals): what the master does with each
# signal in each state, and which signals workers ignore. No traps, no processes.
require "minitest/autorun"
require_relative "../../lib/catamount/cluster/signals"

class TestSignals < Minitest::Test
  parallelize_me!

  Signals = Catamount::Cluster::Signals

  # [signal, stopping, phased, logs redirected] => action.
  RULES = {
    ["TERM", nil, false, false] => :stop,
    ["INT", nil, false, false] => :stop,
    ["TERM", "restart", false, false] => :stop, # a stop during a hot restart wins
    ["INT", "restart", false, false] => :stop,
    ["TERM", "INT", false, false] => nil, # already stopping
    ["INT", "TERM", false, false] => nil,
    ["TERM", nil, true, false] => :stop,
    ["HUP", nil, false, false] => :stop,
    ["HUP", "TERM", false, false] => nil,
    ["HUP", "restart", false, false] => nil,
    ["HUP", nil, false, true] => :reopen_logs,
    ["HUP", "TERM", false, true] => :reopen_logs,
    ["USR2", nil, false, false] => :hot_restart,
    ["USR2", nil, true, false] => :hot_restart, # takes over from a phased restart
    ["USR2", "TERM", false, false] => nil, # a restart while stopping is ignored
    ["USR2", "restart", false, false] => nil,
    ["USR1", nil, false, false] => :phased_restart,
    ["USR1", nil, true, false] => :phased_restart,
    ["USR1", "TERM", false, false] => nil,
    ["USR1", "restart", false, false] => nil,
    ["URG", nil, false, false] => :refork,
    ["URG", nil, true, false] => nil, # waits for the phased restart or refork to end
    ["URG", "TERM", false, false] => nil,
    ["TTIN", nil, false, false] => :add_worker,
    ["TTOU", nil, false, false] => :remove_worker,
    ["TTIN", nil, true, false] => :add_worker,
    ["TTIN", "TERM", false, false] => nil, # not while stopping
    ["TTOU", "restart", false, false] => nil,
    ["CHLD", nil, false, false] => nil, # the loop reaps
    ["CHLD", "TERM", false, false] => nil,
    ["backtraces", nil, false, false] => :backtraces,
    ["backtraces", "TERM", false, false] => :backtraces,
    ["stop", nil, false, false] => :stop, # the control server's /stop, as INT
    ["stop", "restart", false, false] => :stop,
    ["stop", "TERM", false, false] => nil,
    ["halt", nil, false, false] => :halt, # /halt: at once, whatever is going on
    ["halt", "TERM", false, false] => :halt,
    ["halt", "restart", false, false] => :halt
  }.freeze

  def test_what_each_signal_does_in_each_state
    RULES.each do |(sig, stopping, phased, redirected), want|
      got = Signals.action(sig, stopping: stopping, phased: phased, logs_redirected: redirected)
      where = "#{sig} (stopping: #{stopping.inspect}, phased: #{phased}, logs redirected: #{redirected})"
      want.nil? ? assert_nil(got, where) : assert_equal(want, got, where)
    end
  end

  def test_every_master_signal_has_rules
    assert_equal Signals::MASTER.sort, RULES.keys.map(&:first).uniq.reject { |s| %w[backtraces stop halt].include?(s) }.sort
  end

  def test_workers_ignore_every_master_signal_but_their_own
    assert_equal %w[INT TTIN TTOU USR1 USR2 URG], Signals::WORKER_IGNORED
    assert_empty Signals::WORKER_OWN - Signals::MASTER
  end

  def test_the_master_traps_restart_signals_and_urg_only_when_wanted
    all = Signals.master_traps(restart: %w[USR1 USR2], fork_worker: 1000)
    assert_equal Signals::MASTER, all
    plain = Signals.master_traps(restart: %w[USR1], fork_worker: nil)
    assert_equal %w[TERM INT CHLD HUP TTIN TTOU USR1], plain
  end
end
