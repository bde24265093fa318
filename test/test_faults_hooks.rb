# frozen_string_literal: true

require_relative "support/helper"
require "faults"

# Faults under load, the app's own code: every hook the DSL has raises, and so does the
# lowlevel_error_handler. Each raise is logged with the hook's name, the cluster boots, serves,
# reforks, restarts and stops as it would without them, and nothing waits for ever.
# (Puma 5.6.5 on the same configuration: docs/architecture.md, "Hooks that raise".)
class TestFaultsHooks < Minitest::Test
  include Support::ServerTest
  include Support::Faults
  parallelize_me!

  APP = <<~RUBY
    run lambda { |env|
      raise "the app raised" if env["PATH_INFO"] == "/raise"
      [200, { "content-type" => "text/plain" }, [Process.pid.to_s]]
    }
  RUBY

  # Every hook the DSL has (the names of Configuration::HOOKS, read from its source: the test
  # process does not load Catamount).
  TABLE = File.read(File.join(Support::ROOT, "lib/catamount/configuration.rb"))[/HOOKS = \{(.*?)\}\.freeze/m, 1]
  HOOKS = TABLE.scan(/^\s+(\w+): \{/).flatten
  CLUSTER_HOOKS = TABLE.scan(/^\s+(\w+): \{[^}]*cluster: true/).flatten

  # Each hook raising with its own name (`hooks`: the names).
  def config(hooks = HOOKS, cluster: "workers 2\nfork_worker\nworker_check_interval 1\n")
    raising = hooks.map { |name| "#{name} { |*| raise \"#{name} raised\" }\n" }.join
    "#{cluster}#{raising}lowlevel_error_handler { |*| raise \"lowlevel_error_handler raised\" }\n"
  end

  # Single mode runs the hooks that are not the cluster's: after_booted, before_restart (USR2),
  # after_stopped, the thread hooks and out_of_band.
  def test_every_single_mode_hook_raising_is_logged_and_the_server_keeps_serving
    single = HOOKS - CLUSTER_HOOKS
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", APP)
      File.write("#{dir}/puma.rb", config(single, cluster: "threads 1, 2\n"))
      server = launch(["-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", "#{dir}/app.ru"], chdir: dir, boot: true)
      statuses = Array.new(5) { get(server.port, "/").status } + [get(server.port, "/raise").status]
      server.signal("USR2")
      server.wait_for(/Use Ctrl-C to stop(.|\n)*Use Ctrl-C to stop/, timeout: 30)
      statuses += Array.new(5) { get(server.port, "/").status }
      server.signal("TERM")
      server.wait_exit(timeout: 30)
      logged = server.stderr.scan(/WARNING hook (\w+) \(.*\) failed with exception \(RuntimeError\) (\w+) raised/)
      report("every single-mode hook raises", sent: statuses.size, answered: statuses.count(200),
                                              failed: statuses.count { |st| st != 200 }, note: "the one 500 is /raise")
      assert_equal [200] * 5 + [500] + [200] * 5, statuses
      assert_equal single.sort, logged.map(&:first).uniq.sort, server.stderr
      assert_match(/lowlevel_error_handler failed, sending the default 500: .*lowlevel_error_handler raised/, server.stderr)
    ensure
      kill_named_workers(server)
    end
  end

  def test_every_hook_raising_is_logged_and_the_cluster_keeps_serving
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", APP)
      File.write("#{dir}/puma.rb", config)
      server = launch(["-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", "#{dir}/app.ru"], chdir: dir, boot: true)
      statuses = []
      serve = lambda do |booted|
        2.times { |i| server.wait_for(/Worker #{i} \(PID: \d+\) booted/) } if booted
        statuses.concat(Array.new(10) { get(server.port, "/").status })
      end
      serve.call(true)
      statuses << get(server.port, "/raise").status
      server.wait_for(/lowlevel_error_handler failed, sending the default 500: .*lowlevel_error_handler raised/, stream: :stderr)

      server.signal("URG") # refork: before_refork/after_refork in worker 0
      server.wait_for(/WARNING hook after_refork/, stream: :stderr, timeout: 30)
      serve.call(false)

      server.signal("USR2") # hot restart: worker shutdown hooks, before_restart, a new boot
      server.wait_for(/WARNING hook before_restart/, stream: :stderr, timeout: 30)
      server.wait_for(/Use Ctrl-C to stop(.|\n)*Use Ctrl-C to stop/, timeout: 30)
      serve.call(true)

      server.signal("TERM")
      server.wait_exit(timeout: 30)
      logged = server.stderr.scan(/WARNING hook (\w+) \(.*\) failed with exception \(RuntimeError\) (\w+) raised/)
      report("every hook raises", sent: statuses.size, answered: statuses.count(200), failed: statuses.count { |s| s != 200 },
                                  note: "the one 500 is /raise; #{logged.size} hook raises logged")
      assert_equal [200] * 10 + [500] + [200] * 20, statuses
      assert logged.all? { |hook, named| hook == named }, "each raise is logged under its hook's name"
      assert_operator HOOKS.size, :>=, 14
      missing = HOOKS - logged.map(&:first)
      assert_empty missing, "every hook ran and its raise was logged:\n#{server.stderr}"
    ensure
      kill_named_workers(server)
    end
  end
end
