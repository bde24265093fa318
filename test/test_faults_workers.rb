# frozen_string_literal: true

require_relative "support/helper"
require "steady_load"
require "faults"

# Faults under load, cluster workers: a worker killed (SIGKILL) or stopped (SIGSTOP) while a
# steady load runs. Only the requests that worker had taken may fail; what waits in the shared
# listen backlog is answered by the others; the master replaces it. Each test prints its counts.
class TestFaultsWorkers < Minitest::Test
  include Support::ServerTest
  include Support::Faults
  parallelize_me!

  # Answers the pid of the worker that served it (so the load knows who answered what); /slow
  # holds its thread a moment, so a worker has requests in flight when the fault comes.
  APP = <<~RUBY
    run lambda { |env|
      sleep 0.05 if env["PATH_INFO"] == "/slow"
      [200, { "content-type" => "text/plain" }, [Process.pid.to_s]]
    }
  RUBY

  def cluster(config)
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", APP)
      File.write("#{dir}/puma.rb", config)
      server = launch(["-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", "#{dir}/app.ru"], boot: true)
      pids = Array.new(2) { |i| server.wait_for(/Worker #{i} \(PID: (\d+)\) booted/)[1].to_i }
      yield server, pids
    ensure
      kill_named_workers(server)
    end
  end

  # Fresh connections only: each client has one request in flight at a time, so a killed
  # worker fails at most the connections it holds (a keep-alive client would also lose its idle
  # connection to it). Before the kill the worker is stopped, so the connections it holds, its
  # running threads' and those its reactor had accepted, can be counted: that is the bound.
  def test_sigkill_of_a_worker_fails_only_its_in_flight_requests
    cluster("workers 2\nthreads 2, 2\n") do |server, pids|
      load, in_flight = fault_in_worker_0(server, pids) do
        Process.kill("KILL", pids[0])
        server.wait_for(/Worker 0 \(PID: #{pids[0]}\) died \(killed by SIGKILL\)/)
      end
      report("sigkill worker", sent: load.ok + load.failures.size, answered: load.ok, failed: load.failures.size,
                               note: "in flight on the killed worker: <= #{in_flight}")
      assert_operator load.failures.size, :<=, in_flight, load.summary
      per_client = load.failures.group_by(&:client).transform_values(&:size)
      assert per_client.values.all? { |n| n <= 1 }, "a client failed more than its one request: #{load.summary}"
    end
  end

  # While no worker accepts (both stopped), connections wait in the kernel's backlog of the
  # listener every worker shares. Killing one of the workers then loses none of them: the other,
  # and the replacement, take them all.
  def test_nothing_waiting_in_the_listen_backlog_is_lost_when_a_worker_dies
    cluster("workers 2\nthreads 2, 2\n") do |server, pids|
      pids.each { |pid| Process.kill("STOP", pid) }
      pids.each { |pid| wait_stopped(pid) }
      socks = Array.new(20) do
        connect(server.port).tap { |s| s.write("GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") }
      end
      assert_equal [0, 0], pids.map { |pid| client_connections(pid) }, "a stopped worker accepted nothing"
      Process.kill("KILL", pids[0])
      Process.kill("CONT", pids[1])
      answers = socks.map do |sock|
        read_response(sock, timeout: 30).status
      rescue StandardError => e
        e.class.name
      end
      report("backlog while no worker accepts, then one killed", sent: socks.size,
                                                               answered: answers.count(200), failed: answers.count { |a| a != 200 })
      assert_equal [200] * socks.size, answers
      server.wait_for(/Worker 0 \(PID: (?!#{pids[0]})\d+\) booted/, timeout: 30)
    ensure
      socks&.each(&:close)
    end
  end

  # A stopped worker still holds its connections: worker_timeout finds it silent, the master
  # kills it (SIGKILL) and forks a replacement, and the other worker serves the whole time.
  # What the stopped worker had accepted is lost (the workers share one listener, so nothing
  # else is: a connection not yet accepted goes to the other worker); those are counted.
  def test_sigstop_of_a_worker_times_it_out_while_the_other_serves
    cluster("workers 2\nthreads 2, 2\nworker_check_interval 1\nworker_timeout 3\n") do |server, pids|
      during = nil
      load, held = fault_in_worker_0(server, pids) do |steady|
        # The test's own requests too: the load's clients may all be waiting on the stopped one.
        before = steady.bodies[pids[1].to_s]
        probes = 0
        timed_out = /Terminating timed out worker \(Worker 0 failed to check in within 3 seconds\): #{pids[0]}/
        fired = wait_until(timeout: 30) do
          probes += 1 if get(server.port, "/").body == pids[1].to_s
          server.stdout.match?(timed_out)
        end
        assert fired, "worker_timeout never fired:\n#{server.stdout}"
        during = steady.bodies[pids[1].to_s] - before + probes
      end
      report("sigstop worker", sent: load.ok + load.failures.size, answered: load.ok, failed: load.failures.size,
                               note: "held by the stopped worker: #{held}; answered by the other during the stop: #{during}")
      assert_operator during, :>, 0, "the other worker kept serving"
      assert_operator load.failures.size, :<=, held, load.summary
      refute alive?(pids[0]) && File.read("/proc/#{pids[0]}/stat")[/\) (\w)/, 1] != "Z", "the stopped worker was killed"
    end
  end

  private

  # Under a load of fresh connections served by both workers: stops worker 0 (SIGSTOP), counts
  # the connections it holds, then yields (the load) for the fault; waits until a new worker 0
  # serves and the load goes on. Returns the stopped load and the count.
  def fault_in_worker_0(server, pids)
    load = SteadyLoad.new(server.port, path: "/slow", keep_alive: 0, fresh: 8)
    assert load.wait_for_bodies { |b| pids.all? { |pid| b[pid.to_s].positive? } }, "both workers serve: #{load.summary}"
    assert load.wait_for_more(200), load.summary
    Process.kill("STOP", pids[0])
    wait_stopped(pids[0])
    held = client_connections(pids[0])
    yield load
    fresh = server.wait_for(/Worker 0 \(PID: (?!#{pids[0]})(\d+)\) booted/, timeout: 30)[1].to_i
    assert load.wait_for_bodies { |b| b[fresh.to_s].positive? }, "the new worker 0 serves: #{load.summary}"
    assert load.wait_for_more(200), load.summary
    [load.stop, held]
  ensure
    load&.stop
  end
end
