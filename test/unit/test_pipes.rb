# frozen_string_literal: true

# The master–worker messages (Catamount::Cluster::Pipes): what a worker writes is what the
# master reads, over a real pipe in this one process (no fork).
require "minitest/autorun"
require "timeout"
require_relative "../../lib/catamount/cluster/pipes"

class TestPipes < Minitest::Test
  Pipes = Catamount::Cluster::Pipes

  def setup
    @pipes = Pipes.open
  end

  def read_all
    @pipes.read(2)
  end

  def test_each_message_reads_back_as_written
    pid = Process.pid
    @pipes.booted(3)
    @pipes.status({ running: 2, requests_count: 7 })
    @pipes.idle(true)
    @pipes.idle(false)
    @pipes.forked(5)
    @pipes.drained
    @pipes.wake_master
    assert_equal [[:booted, pid, 3, nil], [:status, pid, nil, { running: 2, requests_count: 7 }],
                  [:idle, pid, nil, true], [:idle, pid, nil, false], [:forked, pid, 5, nil], [:drained, pid, nil, nil]],
                 read_all.map(&:to_a)
  end

  # The restart pipe is a broadcast: nothing is ever written, the master's close is the news.
  def test_a_hot_restart_is_announced_by_closing_the_restart_pipe
    refute @pipes.hot_restart?
    refute @pipes.hot_restart?, "asking does not consume anything"
    @pipes.announce_hot_restart
    assert @pipes.hot_restart?
    assert @pipes.hot_restart?
  end

  def test_nothing_arrived
    assert_empty @pipes.read(0.01)
  end

  # A read may end inside a line: the rest comes with the next read.
  def test_a_line_split_across_reads
    r, w = IO.pipe
    pipes = Pipes.new(messages_r: r, messages_w: w)
    w.write("b12:1\np12{\"running\"")
    assert_equal [[:booted, 12, 1, nil]], pipes.read(2).map(&:to_a)
    w.write(":1}\n")
    assert_equal [[:status, 12, nil, { running: 1 }]], pipes.read(2).map(&:to_a)
  ensure
    r&.close
    w&.close
  end

  def test_unreadable_stats_and_unknown_lines
    assert_equal [:status, 12, nil, nil], Pipes.parse("p12{oops").to_a
    assert_equal [:status, 12, nil, nil], Pipes.parse("p12").to_a
    assert_nil Pipes.parse("!")
    assert_nil Pipes.parse("x12")
  end

  def test_template_commands
    r, w = IO.pipe
    pipes = Pipes.new(fork_r: r, fork_w: w)
    queue = Queue.new
    reader = pipes.forward_commands(queue)
    pipes.template_fork([1, 2], 3)
    pipes.template_serve
    pipes.template_refork_done
    got = Timeout.timeout(2) { Array.new(7) { queue.pop } }
    assert_equal [Pipes::STOP_SERVING, Pipes::Phase.new(3), 1, 2, Pipes::SERVE, Pipes::SERVE, Pipes::REFORK_DONE], got
  ensure
    # The writer's close ends the reading thread (EOF); closing the read end under it would
    # raise IOError in that thread instead.
    w&.close
    reader&.join(2)
    r&.close
  end

  def teardown
    @pipes.in_worker(template: false)
  end
end
