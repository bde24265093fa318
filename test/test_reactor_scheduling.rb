# frozen_string_literal: true

require "helper"
require "etc"

# A serving process whose share of the CPUs is one (a single process that may use one CPU,
# cluster workers as many as the CPUs) runs its reactor and log writer threads under Linux's
# SCHED_BATCH policy: the same CPU share, but woken they never preempt a pool thread running
# Ruby (docs/architecture.md, "The reactor never preempts the app"). The pool's Ruby threads and
# the main thread keep the normal policy, and so does every thread of a process with CPUs to
# spare. CATAMOUNT_REACTOR_SCHEDULING=batch or normal decides instead; a policy the user chose
# is left alone.
class TestReactorScheduling < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  OTHER = 0
  BATCH = 3
  IDLE = 5
  APP = File.join(Support::APPS, "scheduling_policies.ru")

  # { thread name => [policies] } of the process that served the request.
  def policies(server)
    response = get(server.port, "/")
    assert_equal 200, response.status, response.body
    response.body.lines.map(&:split).group_by(&:first).transform_values { |l| l.map { |(_, p)| Integer(p) }.uniq }
  end

  def assert_policies(expected, got)
    expected.each { |name, policy| assert_equal [policy], got[name], "#{name}: #{got.inspect}" }
  end

  def pinned_server(*args, env: {})
    command = ["taskset", "-c", "0", RbConfig.ruby, ServerProcess::BIN]
    launch(["-b", "tcp://127.0.0.1:0", *args, APP], boot: true, env: env, command: command)
  end

  def test_pinned_to_one_cpu_the_reactor_runs_batch_and_ruby_threads_normal
    got = policies(pinned_server("-t", "2:2"))
    assert_policies({ "catamount-react" => BATCH, "serving" => OTHER, "main" => OTHER }, got)
    assert_equal [BATCH], got["catamount-log"] if got.key?("catamount-log")
  end

  # With CPUs to spare the reactor wakes on an idle one: nothing to gain, the normal policy.
  def test_with_cpus_to_spare_the_reactor_runs_normal
    expected = Etc.nprocessors == 1 ? BATCH : OTHER
    got = policies(start_server("-t", "2:2", app: "scheduling_policies.ru"))
    assert_policies({ "catamount-react" => expected, "serving" => OTHER, "main" => OTHER }, got)
  end

  # Cluster workers as many as the CPUs keep every CPU busy with Ruby under load: batch. With a
  # CPU to spare for each (one worker on two CPUs here), normal; batch when asked for.
  def test_cluster_workers_run_batch_when_they_are_as_many_as_the_cpus
    command = ["taskset", "-c", "0,1", RbConfig.ruby, ServerProcess::BIN]
    args = ->(workers) { ["-w", workers.to_s, "-t", "1:1", "-b", "tcp://127.0.0.1:0", APP] }
    two = launch(args.call(2), boot: true, command: command)
    assert_policies({ "catamount-react" => BATCH, "serving" => OTHER }, policies(two))
    one = launch(args.call(1), boot: true, command: command)
    assert_policies({ "catamount-react" => OTHER, "serving" => OTHER }, policies(one))
    asked = launch(args.call(1), boot: true, command: command, env: { "CATAMOUNT_REACTOR_SCHEDULING" => "batch" })
    assert_policies({ "catamount-react" => BATCH, "serving" => OTHER }, policies(asked))
  ensure
    [two, one, asked].each { |server| kill_named_workers(server) if server }
  end

  def test_batch_on_request
    server = start_server("-t", "1:1", app: "scheduling_policies.ru", env: { "CATAMOUNT_REACTOR_SCHEDULING" => "batch" })
    assert_policies({ "catamount-react" => BATCH, "serving" => OTHER, "main" => OTHER }, policies(server))
  end

  def test_normal_on_request_even_on_one_cpu
    server = pinned_server("-t", "1:1", env: { "CATAMOUNT_REACTOR_SCHEDULING" => "normal" })
    assert_policies({ "catamount-react" => OTHER, "serving" => OTHER, "main" => OTHER }, policies(server))
  end

  # A process started under another policy keeps it in every thread: someone chose it.
  def test_a_policy_the_user_chose_is_left_alone
    command = ["chrt", "--idle", "0", RbConfig.ruby, ServerProcess::BIN]
    env = { "CATAMOUNT_REACTOR_SCHEDULING" => "batch" }
    server = launch(["-t", "1:1", "-b", "tcp://127.0.0.1:0", APP], boot: true, command: command, env: env)
    assert_policies({ "catamount-react" => IDLE, "serving" => IDLE, "main" => IDLE }, policies(server))
  end

  def test_an_unknown_policy_is_a_boot_error_naming_the_variable
    server = launch(["-b", "tcp://127.0.0.1:0", APP], env: { "CATAMOUNT_REACTOR_SCHEDULING" => "fifo" })
    refute server.wait_exit.success?
    assert_includes server.stderr, 'CATAMOUNT_REACTOR_SCHEDULING="fifo" is not "auto", "batch" or "normal"'
  end
end
