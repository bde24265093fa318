# frozen_string_literal: true

require "helper"

# The reactor and log writer threads run under Linux's SCHED_BATCH policy (the same CPU share,
# but woken they never preempt a pool thread running Ruby: docs/architecture.md, "The reactor
# never preempts the app"); the pool's Ruby threads and the main thread keep the normal policy.
# CATAMOUNT_REACTOR_SCHEDULING=normal turns it off; a policy the user chose is left alone.
class TestReactorScheduling < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  OTHER = 0
  BATCH = 3
  IDLE = 5

  # { thread name => [policies] } of the process that served the request.
  def policies(server)
    response = get(server.port, "/")
    assert_equal 200, response.status, response.body
    response.body.lines.map(&:split).group_by(&:first).transform_values { |l| l.map { |(_, p)| Integer(p) }.uniq }
  end

  def assert_policies(expected, got)
    expected.each { |name, policy| assert_equal [policy], got[name], "#{name}: #{got.inspect}" }
  end

  def test_the_reactor_runs_batch_and_ruby_threads_normal
    got = policies(start_server("-t", "2:2", app: "scheduling_policies.ru"))
    assert_policies({ "catamount-react" => BATCH, "serving" => OTHER, "main" => OTHER }, got)
    assert_equal [BATCH], got["catamount-log"] if got.key?("catamount-log")
  end

  def test_a_cluster_workers_reactor_runs_batch
    server = start_server("-w", "1", "-t", "1:1", app: "scheduling_policies.ru")
    assert_policies({ "catamount-react" => BATCH, "serving" => OTHER }, policies(server))
  end

  def test_normal_scheduling_on_request
    server = start_server("-t", "1:1", app: "scheduling_policies.ru", env: { "CATAMOUNT_REACTOR_SCHEDULING" => "normal" })
    assert_policies({ "catamount-react" => OTHER, "serving" => OTHER, "main" => OTHER }, policies(server))
  end

  # A process started under another policy keeps it in every thread: someone chose it.
  def test_a_policy_the_user_chose_is_left_alone
    server = launch(["-t", "1:1", "-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "scheduling_policies.ru")],
                    boot: true, command: ["chrt", "--idle", "0", RbConfig.ruby, ServerProcess::BIN])
    assert_policies({ "catamount-react" => IDLE, "serving" => IDLE, "main" => IDLE }, policies(server))
  end

  def test_an_unknown_policy_is_a_boot_error_naming_the_variable
    server = launch(["-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "scheduling_policies.ru")],
                    env: { "CATAMOUNT_REACTOR_SCHEDULING" => "fifo" })
    refute server.wait_exit.success?
    assert_includes server.stderr, 'CATAMOUNT_REACTOR_SCHEDULING="fifo" is not "batch" or "normal"'
  end
end
