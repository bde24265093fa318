# frozen_string_literal: true

require_relative "support/helper"

# Cluster mode: a master process that forks workers sharing its listeners. Every test starts the
# real server and counts on what the processes and the sockets show.
class TestCluster < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  # An app that says which process answered, and records each process that loaded it.
  PID_APP = <<~RUBY
    File.write(ENV.fetch("LOADS"), "\#{Process.pid}\\n", mode: "a") if ENV["LOADS"]
    run lambda { |env|
      sleep 1 if env["PATH_INFO"] == "/slow"
      if env["PATH_INFO"] == "/pause"
        sleep 0.003
        File.write(File.join(ENV.fetch("MARKS"), Process.pid.to_s), "serving")
      end
      Process.kill("STOP", Process.pid) if env["PATH_INFO"] == "/hang"
      [200, {}, [Process.pid.to_s]]
    }
  RUBY

  def cluster(config, *args, env: {}, boot: true)
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", PID_APP)
      File.write("#{dir}/puma.rb", config.gsub("DIR", dir))
      server = launch(["-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", *args, "#{dir}/app.ru"],
                      env: { "LOADS" => "#{dir}/loads" }.merge(env), boot: boot)
      yield server, dir
    ensure
      kill_named_workers(server)
    end
  end

  # Index => pid of each worker's first boot, once all `count` have booted.
  def worker_pids(server, count)
    count.times { |i| server.wait_for(/Worker #{i} \(PID: \d+\) booted/) }
    server.stdout.scan(/Worker (\d+) \(PID: (\d+)\) booted/).reverse.to_h { |i, pid| [i.to_i, pid.to_i] }
  end

  # Which pid answers a fresh connection while only the worker `pid` runs, for each of `pids`
  # in turn: each worker takes connections from the shared listener, and the master (never
  # stopped) takes none. Left to the kernel, idle workers' connections can go mostly to one.
  def answers_with_each_worker_alone(port, pids)
    pids.map do |pid|
      with_only_one_worker_running(pids - [pid]) do
        raw_request(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body.to_i
      end
    end
  end

  # Gone, or a zombie its (dead) parent left: either way it serves nothing any more.
  def wait_gone(pid, timeout: 10)
    wait_until(timeout: timeout) { !alive?(pid) || zombie?(pid) }
  end

  def zombie?(pid)
    File.read("/proc/#{pid}/stat").split[2] == "Z"
  rescue Errno::ENOENT
    true
  end

  def test_workers_share_the_listeners_and_the_master_serves_nothing
    cluster("workers 2\n") do |server|
      assert_match(/\[#{server.pid}\] Catamount starting in cluster mode\.\.\./, server.stdout)
      assert_match(/Workers: 2$/, server.stdout)
      pids = worker_pids(server, 2)
      assert_equal 2, pids.values.uniq.size
      refute_includes pids.values, server.pid
      assert_equal pids.values, answers_with_each_worker_alone(server.port, pids.values),
                   "both workers accept; the master never answers"
      pids.each do |index, pid|
        assert_match(/catamount: cluster worker #{index}: #{server.pid}/, File.read("/proc/#{pid}/cmdline"))
      end
    end
  end

  # A burst of keep-alive connections must not all land on the worker that accepted first (its
  # threads all look free until the requests arrive); the others would idle meanwhile.
  def test_a_burst_of_connections_spreads_over_the_workers
    cluster("workers 2\nthreads 1, 1\n") do |server|
      pids = worker_pids(server, 2)
      # As a load generator does: open every connection, then send on each.
      socks = Array.new(8) { connect(server.port) }
      socks.each { |sock| sock.write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n") }
      answered = socks.map { |sock| read_response(sock, timeout: 20).body.to_i }
      assert_equal pids.values.sort, answered.uniq.sort, "answers came from #{answered.tally}"
    ensure
      socks&.each(&:close)
    end
  end

  # Keep-alive traffic that never leaves a thread free in either worker: a new connection is
  # still taken by one of them, and answered while that traffic goes on.
  def test_a_new_connection_is_served_while_keep_alive_traffic_fills_every_worker
    Dir.mktmpdir do |marks|
      cluster("workers 2\nthreads 1, 1\n", env: { "MARKS" => marks }) do |server|
        worker_pids(server, 2)
        under_wrk(server.port, "/pause", connections: 20) do
          assert wait_until { Dir.children(marks).size == 2 }, "both workers serve the load"
          response = raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout: 10)
          assert_equal 200, response.status
        end
      end
    end
  end

  def test_preload_loads_the_app_once_in_the_master
    cluster("workers 2\nnakayoshi_fork\n") do |server, dir|
      worker_pids(server, 2)
      assert_equal [server.pid], File.read("#{dir}/loads").split.map(&:to_i)
      assert_match(/Preload: yes$/, server.stdout)
    end
    cluster("workers 2\npreload_app! false\n") do |server, dir|
      pids = worker_pids(server, 2)
      assert_equal pids.values.sort, File.read("#{dir}/loads").split.map(&:to_i).sort
      assert_match(/Preload: no$/, server.stdout)
    end
  end

  def test_a_killed_worker_is_replaced_and_serving_goes_on
    cluster("workers 2\n") do |server|
      pids = worker_pids(server, 2)
      Process.kill("KILL", pids[0])
      line = server.wait_for(/Worker 0 \(PID: #{pids[0]}\) died \(killed by SIGKILL\)/)
      assert line
      replacement = server.wait_for(/Worker 0 \(PID: (?!#{pids[0]})(\d+)\) booted/)[1].to_i
      serving = [pids[1], replacement]
      assert_equal serving, answers_with_each_worker_alone(server.port, serving)
    end
  end

  def test_sigterm_finishes_in_flight_requests_and_stops_every_worker
    cluster("workers 2\n") do |server|
      pids = worker_pids(server, 2)
      sock = connect(server.port)
      sock.write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
      sleep 0.3 # lets the request reach a worker; the outcome below does not depend on it
      server.signal("TERM")
      response = read_response(sock)
      assert_equal 200, response.status
      assert_equal "close", response["connection"]
      assert_equal Signal.list["TERM"], server.wait_exit.termsig
      pids.each_value { |pid| assert wait_gone(pid), "worker #{pid} still alive" }
      assert_includes server.stdout, "Gracefully shutting down workers"
    ensure
      sock&.close
    end
  end

  def test_hooks_run_where_puma_runs_them
    cluster(<<~RUBY) do |server, dir|
      workers 2
      before_fork { File.write("DIR/before_fork", Process.pid.to_s) }
      on_worker_fork { |i| File.write("DIR/worker_fork_\#{i}", Process.pid.to_s) }
      after_worker_fork { |i| File.write("DIR/after_worker_fork_\#{i}", Process.pid.to_s) }
      on_worker_boot { |i| File.write("DIR/boot_\#{i}", Process.pid.to_s) }
      before_worker_boot(:db) { |i, data| data[:opened] = "conn-\#{i}" }
      before_worker_shutdown(:db) { |i, data| File.write("DIR/shutdown_\#{i}", data[:opened]) }
      after_worker_shutdown { |w| File.write("DIR/reaped_\#{w.index}", w.process_status.exitstatus.to_s) }
      after_booted { File.write("DIR/booted", Process.pid.to_s) }
      out_of_band { File.write("DIR/out_of_band_\#{Process.pid}", "idle") }
      raise_exception_on_sigterm false
    RUBY
      pids = worker_pids(server, 2)
      master = server.pid.to_s
      # out_of_band runs in the worker that served, once it has nothing else to do.
      served = raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body
      assert_equal "idle", wait_for_file("#{dir}/out_of_band_#{served}")
      assert_equal master, wait_for_file("#{dir}/before_fork")
      assert_equal master, wait_for_file("#{dir}/booted")
      [0, 1].each do |i|
        assert_equal master, wait_for_file("#{dir}/worker_fork_#{i}")
        assert_equal master, wait_for_file("#{dir}/after_worker_fork_#{i}")
        assert_equal pids[i].to_s, wait_for_file("#{dir}/boot_#{i}")
      end
      server.signal("TERM")
      assert_equal 0, server.wait_exit.exitstatus
      [0, 1].each do |i|
        assert_equal "conn-#{i}", File.read("#{dir}/shutdown_#{i}"), "keyed hooks share their Hash"
        assert_equal "0", File.read("#{dir}/reaped_#{i}")
      end
      refute_match(/WARNING hook/, server.stderr)
    end
  end

  def test_a_hung_worker_is_replaced_after_worker_timeout
    cluster("workers 1\nworker_check_interval 1\nworker_timeout 2\nsilence_single_worker_warning\n") do |server|
      pid = worker_pids(server, 1)[0]
      sock = connect(server.port)
      sock.write("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n") # the worker stops itself (SIGSTOP)
      server.wait_for(/Terminating timed out worker \(Worker 0 failed to check in within 2 seconds\): #{pid}/, timeout: 15)
      fresh = server.wait_for(/Worker 0 \(PID: (?!#{pid})(\d+)\) booted/, timeout: 10)[1].to_i
      assert_equal fresh, get(server.port, "/").body.to_i
    ensure
      sock&.close
    end
  end

  def test_workers_stop_when_the_master_dies
    cluster("workers 2\n") do |server|
      pids = worker_pids(server, 2)
      Process.kill("KILL", server.pid)
      pids.each_value { |pid| assert wait_gone(pid), "worker #{pid} outlived its master" }
    end
  end

  def test_an_app_that_cannot_boot_is_retried_with_back_off_then_the_master_gives_up
    Dir.mktmpdir do |dir|
      File.write("#{dir}/broken.ru", "raise 'no database'\n")
      File.write("#{dir}/puma.rb", "workers 2\npreload_app! false\n")
      server = launch(["-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", "#{dir}/broken.ru"])
      status = server.wait_exit(timeout: 40)
      assert_equal 1, status.exitstatus
      assert_match(/failed to boot \(exit 1\); next try in 1s/, server.stdout)
      assert_match(/next try in 4s/, server.stdout)
      assert_match(/no worker could boot/, server.stderr)
      assert_match(/error loading .*broken\.ru: no database/, server.stderr)
      assert_operator server.stdout.scan(/failed to boot/).size, :<=, 8, "back-off, not a fork storm"
    end
  end

  def test_unix_socket_survives_a_worker_and_goes_with_the_master
    path = File.join(Dir.tmpdir, "cat-cluster-#{Process.pid}-#{rand(1 << 30)}.sock")
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", PID_APP)
      server = launch(["-w", "2", "-b", "unix://#{path}", "#{dir}/app.ru"], boot: true)
      pids = worker_pids(server, 2)
      Process.kill("KILL", pids[0])
      server.wait_for(/Worker 0 \(PID: (?!#{pids[0]})\d+\) booted/)
      assert File.socket?(path), "a worker's death must not remove the master's socket"
      sock = UNIXSocket.new(path)
      sock.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert_equal 200, read_response(sock).status
      server.signal("INT")
      assert_equal 0, server.wait_exit.exitstatus
      refute File.exist?(path)
    ensure
      sock&.close
    end
  end

  # Left behind by a server that was killed: a pidfile and a state file naming a dead process,
  # and a socket file nobody listens on. Like Puma, the next server takes them over; a socket
  # file something still listens on is refused instead.
  def test_stale_pidfile_state_file_and_socket_file_are_taken_over
    Dir.mktmpdir do |dir|
      sock = File.join(Dir.tmpdir, "cat-stale-#{Process.pid}-#{rand(1 << 30)}.sock")
      UNIXServer.new(sock).close # closed without removing the file
      assert File.socket?(sock)
      File.write("#{dir}/pid", "999999\n")
      File.write("#{dir}/state.yml", "---\npid: 999999\n")
      config = "workers 2\npidfile '#{dir}/pid'\nstate_path '#{dir}/state.yml'\n"
      cluster(config, "-b", "unix://#{sock}") do |server, app_dir|
        worker_pids(server, 2)
        assert_equal "#{server.pid}\n", File.read("#{dir}/pid")
        assert_match(/^pid: #{server.pid}$/, File.read("#{dir}/state.yml"))
        client = UNIXSocket.new(sock)
        client.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert_equal 200, read_response(client).status
        client.close

        # A live socket is not taken over.
        second = launch(["-b", "unix://#{sock}", "#{app_dir}/app.ru"])
        refute second.wait_exit.success?
        assert_includes second.stderr, "there is already a server bound to"
        assert File.socket?(sock)

        server.signal("INT")
        assert_equal 0, server.wait_exit(timeout: 30).exitstatus
        refute File.exist?("#{dir}/pid")
        refute File.exist?(sock)
      end
    ensure
      File.delete(sock) if sock && File.exist?(sock)
    end
  end

  def test_idle_timeout_stops_the_cluster_once_every_worker_is_idle
    cluster("workers 2\nidle_timeout 2\nraise_exception_on_sigterm false\n") do |server, _dir|
      worker_pids(server, 2)
      # Steady requests (one a fifth of a second, far below the limit) keep it up: one busy
      # worker is enough, even when the other sees nothing.
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
      while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
        assert_equal 200, raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status
        sleep 0.2
      end
      refute server.exited?, server.stdout
      refute_includes server.stdout, "All workers reached idle timeout"
      # Then nothing: it stops by itself, gracefully.
      status = server.wait_exit(timeout: 20)
      assert_equal 0, status.exitstatus
      assert_match(/All workers reached idle timeout.*Gracefully shutting down workers.*Goodbye/m, server.stdout)
    end
  end

  # /busy holds a thread until DIR/release exists (at most 30 s); it first writes its pid.
  BUSY_APP = <<~RUBY
    run lambda { |env|
      if env["PATH_INFO"] == "/busy"
        File.write("busy", Process.pid.to_s)
        deadline = Time.now + 30
        sleep 0.01 until File.exist?("release") || Time.now > deadline
      end
      [200, {}, [Process.pid.to_s]]
    }
  RUBY

  # Which worker answers fresh connections while the other serves a long request: the busy
  # one still has a free thread, so only the delay keeps it from taking its half.
  def answers_while_one_worker_is_busy(delay)
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", BUSY_APP)
      File.write("#{dir}/puma.rb", "workers 2\nthreads 2, 2\nwait_for_less_busy_worker #{delay}\n")
      server = launch(["-C", "puma.rb", "-b", "tcp://127.0.0.1:0", "app.ru"], chdir: dir, boot: true)
      worker_pids(server, 2)
      busy = Thread.new { raw_request(server.port, "GET /busy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") }
      assert wait_for_file("#{dir}/busy"), "the long request started"
      busy_pid = File.read("#{dir}/busy").to_i
      answers = Array.new(20) do
        raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body.to_i
      end
      File.write("#{dir}/release", "")
      assert_equal 200, busy.value.status
      answers.count(busy_pid)
    ensure
      kill_named_workers(server)
    end
  end

  def test_wait_for_less_busy_worker_lets_the_idle_worker_take_new_connections
    assert_operator answers_while_one_worker_is_busy(0.5), :<=, 2, "the busy worker kept out of the way"
  end
end
