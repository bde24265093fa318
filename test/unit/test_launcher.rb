# frozen_string_literal: true

# What plugins may call on the launcher before a role runs, and a master's requests before its
# traps: each works instead of raising on a nil. No built extension, no fork.
require "minitest/autorun"
require "stringio"
require "timeout"
%w[context restart timers launcher cluster/pipes cluster/master].each { |f| require_relative "../../lib/catamount/#{f}" }

class TestLauncher < Minitest::Test
  def test_every_before_any_role_runs_on_a_thread
    launcher = Catamount::Launcher.new([], out: StringIO.new, err: StringIO.new)
    ticks = Queue.new
    thread = launcher.every(0.01) { ticks << :tick; :done }
    assert_equal :tick, Timeout.timeout(2) { ticks.pop }
    assert thread.join(2), "ended by :done"
  end

  # A plugin's `launcher.restart` between the master's creation and its traps.
  def test_a_master_takes_a_request_made_before_it_trapped_signals
    context = Catamount::Context.new(nil, [], out: StringIO.new, err: StringIO.new)
    master = Catamount::Cluster::Master.new(context)
    master.request("USR2") # raised NoMethodError while the wake-up pipe opened with the traps
    pass
  end
end
