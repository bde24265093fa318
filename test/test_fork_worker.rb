# frozen_string_literal: true

require_relative "support/helper"
require "under_load"

# fork_worker: worker 0 comes from the master, the others from worker 0; a refork (URG, or
# automatically after N requests of worker 0) replaces the others by fresh forks of worker 0.
# Every forked worker is the master's child (the master is their subreaper), so the master
# reaps them, sees how they ended and takes them down when it stops. A phased restart of a
# preloaded app works the same way: worker 0 is a fresh run loading the new code, the others
# are forked from it.
class TestForkWorker < Minitest::Test
  include Support::ServerTest
  include Support::UnderLoad
  parallelize_me!

  # Hooks that write where they ran into DIR/hooks.log, one line each.
  HOOKS = <<~RUBY
    log = ->(line) { File.open("hooks.log", "a") { |f| f.puts(line) } }
    on_worker_fork { |index| log.call("fork \#{index} in \#{Process.pid}") }
    before_refork { log.call("before_refork in \#{Process.pid}") }
    after_refork { log.call("after_refork in \#{Process.pid}") }
  RUBY

  def hooks(dir)
    File.exist?("#{dir}/hooks.log") ? File.readlines("#{dir}/hooks.log", chomp: true) : []
  end

  def booted_pid(server, index, nth: 1)
    assert wait_until(timeout: 30) { server.stdout.scan(/Worker #{index} \(PID: (\d+)\) booted/).size >= nth },
           "worker #{index} booted #{nth} time(s): #{server.stdout}"
    server.stdout.scan(/Worker #{index} \(PID: (\d+)\) booted/).flatten[nth - 1].to_i
  end

  def parent_of(pid)
    File.read("/proc/#{pid}/stat")[/\) \S (\d+)/, 1].to_i
  end

  # A worker forked by worker 0 is the master's child once the middle process has exited, which
  # the worker may beat to its boot line on a loaded machine: bounded wait, not a glimpse.
  def assert_reaped_by(master, pid)
    assert wait_until { parent_of(pid) == master }, "the master reaps every worker: #{pid}'s parent is #{parent_of(pid)}"
  end

  def test_workers_are_forked_from_worker_0_and_a_refork_on_urg_replaces_them_losing_nothing
    serve("-w", "3", "-t", "2:2", config: "fork_worker 0\n#{HOOKS}") do |server, dir|
      master = server.pid
      first = (0..2).map { |i| booted_pid(server, i) }
      assert_includes server.stdout, "Restarts: (✔) hot (✔) phased (✔) refork".b
      assert_includes hooks(dir), "fork 0 in #{master}", "worker 0 is forked by the master"
      assert_includes hooks(dir), "fork 1 in #{first[0]}", "worker 1 is forked by worker 0"
      assert_includes hooks(dir), "fork 2 in #{first[0]}", "worker 2 is forked by worker 0"
      first.each { |pid| assert_reaped_by(master, pid) }

      load = under_load(server.port,
                        event: -> { server.signal("URG") },
                        done: ->(_) { server.stdout.include?("Refork complete") })
      assert_empty load.failures, load.summary
      log = server.stdout
      assert_match(/Starting worker refork, phase: 1/, log)
      # One at a time, worker 0 kept.
      assert_match(/Stopping #{first[1]} for refork.*Worker 1 \(PID: \d+\) booted in [\d.]+s, phase: 1.*Stopping #{first[2]} for refork.*Worker 2 \(PID: \d+\) booted in [\d.]+s, phase: 1/m, log)
      refute_match(/Stopping #{first[0]}/, log)
      second = [1, 2].map { |i| booted_pid(server, i, nth: 2) }
      assert_includes hooks(dir), "fork 1 in #{first[0]}"
      assert_equal 2, hooks(dir).count("fork 1 in #{first[0]}"), "the replacement comes from worker 0 too"
      assert_includes hooks(dir), "before_refork in #{first[0]}"
      # after_refork runs in worker 0 once the master says the refork is complete.
      assert wait_until { hooks(dir).grep(/after_refork/).any? }
      assert_equal ["after_refork in #{first[0]}"], hooks(dir).grep(/after_refork/), "once per refork, in worker 0"
      assert wait_until { !alive?(first[1]) && !alive?(first[2]) }, "the old workers are gone"
      assert alive?(first[0])
      second.each { |pid| assert_reaped_by(master, pid) }

      # A stop takes every worker down, the forked ones too.
      server.signal("TERM")
      # Like Puma, the master ends by re-raising SIGTERM (`raise_exception_on_sigterm`).
      assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
      ([first[0]] + second).each { |pid| assert wait_until { !alive?(pid) }, "worker #{pid} stopped" }
    end
  end

  def test_worker_0_refork_happens_by_itself_after_the_configured_requests_once
    serve("-w", "2", "-t", "1:1", config: "fork_worker 20\nworker_check_interval 1\n#{HOOKS}") do |server, dir|
      booted_pid(server, 1)
      request = -> { raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") }
      # The master learns worker 0's count from its pings (every second here).
      reforked = wait_until(timeout: 30) do
        assert_equal 200, request.call.status
        server.stdout.include?("Starting worker refork, phase: 1")
      end
      assert reforked, "a refork after worker 0 served 20 requests: #{server.stdout}"
      assert server.wait_for(/Refork complete, phase: 1/)
      assert wait_until { hooks(dir).grep(/after_refork/).size == 1 }
      # Worker 0 keeps counting past the limit; its next pings start nothing new.
      60.times { assert_equal 200, request.call.status }
      sleep 3 # three check intervals: pings the master would act on
      refute_match(/phase: 2/, server.stdout)
    end
  end

  def test_a_killed_worker_0_is_replaced_from_the_master_the_others_keep_serving_and_it_is_never_culled
    serve("-w", "2", "-t", "2:2", config: "fork_worker 0\n#{HOOKS}") do |server, dir|
      master = server.pid
      zero = booted_pid(server, 0)
      one = booted_pid(server, 1)
      kill_worker_0_under_load(server, zero)
      assert alive?(one), "worker 1 lives on without the worker it was forked from"
      new_zero = booted_pid(server, 0, nth: 2)
      assert_equal 2, hooks(dir).count("fork 0 in #{master}")

      # A new worker comes from the new worker 0.
      server.signal("TTIN")
      two = booted_pid(server, 2)
      assert_includes hooks(dir), "fork 2 in #{new_zero}"
      assert_reaped_by(master, two)
      # Worker 0 is the youngest but the one the others come from: the culls take 2, then 1.
      server.signal("TTOU")
      assert server.wait_for(/Worker 2 \(PID: #{two}\) terminating/)
      server.signal("TTOU")
      assert server.wait_for(/Worker 1 \(PID: #{one}\) terminating/)
      assert wait_until { !alive?(one) && !alive?(two) }
      assert alive?(new_zero)
      refute_match(/Worker 0 \(PID: \d+\) terminating/, server.stdout)
      assert_equal 200, raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status
    end
  end

  def test_phased_restart_replaces_worker_0_first_and_forks_the_rest_from_the_new_one
    serve("-w", "2", "-t", "2:2", config: "preload_app! false\nfork_worker 0\n#{HOOKS}") do |server, dir|
      old = [0, 1].map { |i| booted_pid(server, i) }
      assert_includes server.stdout, "Restarts: (✔) hot (✔) phased (✔) refork".b
      phased_restart_under_load(server, dir, "v2")
      assert_match(/Stopping #{old[0]} for phased upgrade.*Worker 0 \(PID: \d+\) booted.*Stopping #{old[1]} for phased upgrade/m,
                   server.stdout)
      new_zero = booted_pid(server, 0, nth: 2)
      assert_includes hooks(dir), "fork 1 in #{new_zero}"
      assert_only_version_served(server, "v2")
    end
  end

  def test_phased_restart_of_a_preloaded_app_loads_new_code_in_a_fresh_worker_0_and_forks_the_rest_from_it
    serve("-w", "2", "-t", "2:2", config: HOOKS) do |server, dir|
      master = server.pid
      old = [0, 1].map { |i| booted_pid(server, i) }
      assert_match(/Preload: yes/, server.stdout)
      new_code_under_load(server, dir, "v2", "USR1")
      assert server.wait_for(/Phased restart complete, phase: 1/)
      refute_match(/phased-restart called but not available/, server.stdout)
      assert_equal 1, server.stdout.scan("Catamount starting").size, "no hot restart"
      assert_equal master, server.pid
      zero = booted_pid(server, 0, nth: 2)
      one = booted_pid(server, 1, nth: 2)
      assert_match(/Stopping #{old[0]} for phased upgrade.*Worker 0 \(PID: #{zero}\) booted.*Stopping #{old[1]} for phased upgrade/m,
                   server.stdout)
      assert_includes hooks(dir), "fork 1 in #{zero}", "worker 1 comes from the new worker 0"
      [zero, one].each { |pid| assert_reaped_by(master, pid) }

      # The master's preloaded copy is old code: a lost worker comes back with the new code,
      # forked from worker 0, or (worker 0 itself) loading it afresh.
      Process.kill("KILL", one)
      replaced_one = booted_pid(server, 1, nth: 3)
      assert_equal 2, hooks(dir).count("fork 1 in #{zero}"), "the replacement is forked by worker 0"
      Process.kill("KILL", zero)
      booted_pid(server, 0, nth: 3)
      assert wait_until { !alive?(zero) }
      assert_only_version_served(server, "v2")
      assert alive?(replaced_one)

      # And again.
      new_code_under_load(server, dir, "v3", "USR1")
      assert server.wait_for(/Phased restart complete, phase: 2/)
    end
  end

  def children_of(pid)
    File.read("/proc/#{pid}/task/#{pid}/children").split.map(&:to_i)
  end

  # While worker 0 forks (held here by a slow before_refork): a HUP to reopen logs, and a TTOU
  # that culls the worker not reported yet; that worker is stopped as soon as it reports.
  def test_signals_while_worker_0_forks
    Dir.mktmpdir do |logs|
      config = "fork_worker 0\nstdout_redirect '#{logs}/out', '#{logs}/err', true\n" \
               "before_refork { sleep 2 }\n#{HOOKS}" \
               "before_worker_shutdown { |i| File.open('hooks.log', 'a') { |f| f.puts(\"shutdown \#{i}\") } }\n"
      Dir.mktmpdir do |dir|
        File.write("#{dir}/app.ru", app_source("v1"))
        File.write("#{dir}/puma.rb", config)
        server = launch(["-C", "puma.rb", "-w", "2", "-b", "tcp://127.0.0.1:0", "app.ru"], chdir: dir)
        log = -> { File.exist?("#{logs}/out") ? File.read("#{logs}/out") : "" }
        assert wait_until(timeout: 30) { log.call.include?("Worker 1 (PID:") }, log.call
        port = log.call[/Listening on http:\/\/127\.0\.0\.1:(\d+)/, 1].to_i
        zero = log.call[/Worker 0 \(PID: (\d+)\)/, 1].to_i
        one = log.call[/Worker 1 \(PID: (\d+)\)/, 1].to_i
        server.signal("TTIN")
        assert wait_until { log.call.include?("Worker count now 3") }
        server.signal("HUP") # worker 2 has no pid yet
        server.signal("TTOU")
        assert wait_until(timeout: 30) { log.call.match?(/Worker 2 \(PID: \) terminating/) }, log.call
        # Worker 2 was forked, reported, got its TERM and is gone; the master is fine.
        assert wait_until(timeout: 30) { hooks(dir).include?("fork 2 in #{zero}") }, hooks(dir).inspect
        # Stopped serving (its shutdown hook runs after its server ended): until then it may
        # not be the master's child yet (it is re-parented when worker 0's middle process exits).
        assert wait_until(timeout: 30) { hooks(dir).include?("shutdown 2") }, hooks(dir).inspect
        assert wait_until(timeout: 30) { children_of(server.pid).sort == [zero, one].sort }, children_of(server.pid).inspect
        refute server.exited?
        pids = Array.new(20) { raw_request(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body.split.last.to_i }
        assert_empty pids - [zero, one]
      ensure
        kill_named_workers(server)
      end
    end
  end

  # A TTOU while worker 0 boots leaves nothing to fork: worker 0 is still told to serve.
  def test_worker_0_serves_when_nothing_is_left_to_fork_and_usr1_during_a_refork_is_a_phased_restart
    slow_boot = "sleep 2\n#{app_source('v1')}"
    serve("-w", "2", config: "preload_app! false\nfork_worker 0\nbefore_refork { sleep 1 }\n#{HOOKS}") do |server, dir|
      booted_pid(server, 1)
      File.write("#{dir}/app.ru", slow_boot) # the served app was loaded before; this one is slow
      server.signal("USR1")
      assert server.wait_for(/Stopping \d+ for phased upgrade/)
      server.signal("TTOU")
      assert server.wait_for(/Worker count now 1/)
      assert server.wait_for(/Worker 0 \(PID: \d+\) booted in [\d.]+s, phase: 1/, timeout: 30)
      request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      assert_equal 200, raw_request(server.port, request).status, "the new worker 0 serves"

      # USR1 during a refork: the phased restart takes over, no after_refork runs.
      server.signal("TTIN")
      assert wait_until(timeout: 30) { server.stdout.scan(/Worker 1 \(PID: \d+\) booted/).size == 2 }, server.stdout
      server.signal("URG")
      assert server.wait_for(/Starting worker refork, phase: 2/)
      server.signal("USR1")
      assert server.wait_for(/Phased restart complete, phase: 3/, timeout: 60)
      refute_match(/Refork complete/, server.stdout)
      assert_empty hooks(dir).grep(/after_refork/)
      assert_equal 200, raw_request(server.port, request).status
    end
  end
end
