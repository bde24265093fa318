# frozen_string_literal: true

require_relative "support/helper"

# The drain on stop in cluster mode (drain.rb): a worker told to stop (a phased restart, a
# stop) keeps its WebSocket and hijacked connections and its streaming responses for
# `drain_timeout`, then closes what is left, one worker-prefixed line each; worker 0 as a
# template too; a hot restart does not drain (also not a drain already running); and a
# connection worker 0's app took stays worker 0's after a refork (its forked siblings close
# their copies). Clients: test/support/websocket_client.py (`hold`) and raw sockets on
# test/apps/drain.ru.
class TestDrainCluster < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  CLIENT = File.join(__dir__, "support", "websocket_client.py")
  REQUEST = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

  # Starts `catamount -C puma.rb` (with `config`) on `app` in a fresh directory that lives as
  # long as the server (a hot restart reads the config again); every worker dies with the test.
  def cluster(config, app:)
    dir = Dir.mktmpdir
    File.write("#{dir}/puma.rb", config)
    server = launch(["-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", File.join(Support::APPS, app)],
                    chdir: dir, boot: true)
    yield server
  ensure
    kill_named_workers(server)
    FileUtils.rm_rf(dir) if dir
  end

  # The pids of the workers booted so far, once `count` booted (in boot order).
  def booted(server, count)
    assert wait_until(timeout: 30) { server.stdout.scan(/Worker \d+ \(PID: \d+\) booted/).size >= count },
           "#{count} workers booted: #{server.stdout}"
    server.stdout.scan(/Worker \d+ \(PID: (\d+)\) booted/).flatten.map(&:to_i)
  end

  def worker_pid(server, index)
    assert wait_until(timeout: 30) { server.stdout.match?(/Worker #{index} \(PID: \d+\) booted/) }, server.stdout
    server.stdout[/Worker #{index} \(PID: (\d+)\) booted/, 1].to_i
  end

  # The drain's line for each connection it closed: the worker pids they carry, one per line.
  def taken_closed_by(server, what)
    server.stdout.scan(/^\[(\d+)\] - Drain time \(\d+ s\) over: closing the connection taken by #{what} from 127\.0\.0\.1, open [\d.]+ s$/)
          .flatten.map(&:to_i)
  end

  # A drain.ru /hijack connection and the pid of the worker whose app took it.
  def hijack(port)
    sock = connect(port)
    sock.write("GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n")
    greeting = read_line(sock)
    assert_match(/\Ahello \d+\n\z/, greeting)
    [sock, greeting.split.last.to_i]
  end

  def assert_echoes(sock, text)
    sock.write("#{text}\n")
    assert_equal "#{text}\n", read_line(sock)
  end

  # The issue's point: Puma drops a worker's WebSocket clients as soon as a phased restart stops
  # it (puma#3323); here each old worker keeps its clients until its drain time is over, and
  # logs the ones it closes then. The clients echo after each worker's stop (the replacement
  # boots while the old worker drains, so both old workers drain at once), plain requests are
  # answered, and a new client is served by the new workers meanwhile.
  def test_a_phased_restart_keeps_websocket_clients_until_their_workers_drain_time_is_over
    n = 10
    stopped = []
    cluster("workers 2\npreload_app! false\ndrain_timeout 10\n", app: "websocket.ru") do |server|
      old = booted(server, 2)
      url = "ws://127.0.0.1:#{server.port}/ws"
      IO.popen([PYTHON, CLIENT, "hold", url, n.to_s], "r+", err: %i[child out]) do |client|
        command = lambda do |line|
          client.puts(line)
          client.flush
          JSON.parse(read_report(client))
        end
        assert_equal({ "ready" => n, "echoed" => n }, JSON.parse(read_report(client)))
        server.signal("USR1")

        2.times do |i|
          stops = -> { server.stdout.scan(/Stopping (\d+) for phased upgrade/).flatten.map(&:to_i) }
          assert wait_until(timeout: 30) { stops.call.size > i }, server.stdout
          stopped << stops.call[i]
          assert_equal({ "open" => n, "echoed" => n }, command.call("echo"), "none was dropped at stop #{i + 1}")
          3.times { assert_equal "plain", get(server.port, "/").body }
        end

        server.wait_for(/Phased restart complete, phase: 1/, timeout: 30)
        report = JSON.parse(IO.popen([PYTHON, CLIENT, "echo", url], err: %i[child out], &:read).lines.last)
        assert_equal "héllo", report["text"], "a new WebSocket connection after the restart"
        assert_equal({ "closed" => n, "codes" => [1006] * n }, command.call("closed"),
                     "every connection was closed by the server (no close frame: the app never sent one)")
      end
      assert $?.success?
      assert_equal old.sort, stopped.sort
      assert wait_until { taken_closed_by(server, "GET /ws").size == n }, "one line per connection:\n#{server.stdout}"
      closed = taken_closed_by(server, "GET /ws")
      assert_empty closed - old, "each line is an old worker's"
      closed.tally.each do |pid, count|
        noun = count == 1 ? "connection" : "connections"
        assert_includes server.stdout, "[#{pid}] - Waiting up to 10 s (drain_timeout) for #{count} #{noun} taken by the app"
      end
    end
  end

  # Worker 0's app took a connection; a refork forks new siblings from worker 0, copying the
  # descriptor. They close their copies (Drain.close_inherited), so when worker 0's app closes
  # the connection its client sees the end at once, not when the siblings stop.
  def test_a_connection_taken_in_worker_0_stays_its_apps_after_a_refork
    cluster("workers 2\nfork_worker 0\n", app: "drain.ru") do |server|
      zero = worker_pid(server, 0)
      held, pid = with_only_one_worker_running([worker_pid(server, 1)]) { hijack(server.port) }
      assert_equal zero, pid, "the /hijack connection is worker 0's"

      server.signal("URG")
      server.wait_for(/Refork complete, phase: 1/, timeout: 30)
      assert wait_until { server.stdout.scan(/Worker 1 \(PID: \d+\) booted/).size == 2 }, server.stdout
      new_one = server.stdout.scan(/Worker 1 \(PID: (\d+)\) booted/).flatten.last.to_i
      assert alive?(new_one)

      assert_echoes(held, "still here")
      assert_echoes(held, "quit")
      assert_nil read_line(held, what: "the end of the stream the app closed"), "the app closed it: the client sees the end"
      assert_equal 200, raw_request(server.port, REQUEST).status
    ensure
      held&.close
    end
  end

  # A stop: the master closes its listeners and stops the workers; an open SSE stream goes on
  # until the drain time is over, then its worker cuts it and logs it.
  def test_a_cluster_stop_lets_a_streaming_response_go_on_until_the_drain_time_is_over
    cluster("workers 2\ndrain_timeout 3\n", app: "drain.ru") do |server|
      booted(server, 2)
      sock = connect(server.port)
      sock.write("GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
      lock = Mutex.new
      received = +""
      reader = Thread.new do
        loop do
          chunk = sock.readpartial(65_536)
          lock.synchronize { received << chunk }
        end
      rescue EOFError, IOError, SystemCallError
        :ended
      end
      events = -> { lock.synchronize { received.scan(/^data: (\d+) \d+$/).flatten.map(&:to_i) } }
      assert wait_until { events.call.size >= 3 }, "the stream flows: #{received.inspect}"
      worker = events.call.first

      server.signal("TERM")
      wait_until_refused(server.port)
      before = events.call.size
      assert wait_until { events.call.size >= before + 3 }, "events after new connections were refused: #{received.inspect}\n#{server.stdout}"
      assert_equal :ended, reader.join(15)&.value, "the stream ended"
      assert_equal [worker], events.call.uniq
      assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
      assert_includes server.stdout,
                      "[#{worker}] - Drain time (3 s) over: closing the response still being written to 127.0.0.1 (GET /events)"
    ensure
      sock&.close
      reader&.join(5)
    end
  end

  # A hot restart replaces every process while nothing accepts, so it does not drain: with a
  # drain time of 60 s, a hijacked connection is closed at once (logged as such) and the
  # restarted server serves long before the drain time would have ended.
  def test_a_hot_restart_does_not_drain
    cluster("workers 2\ndrain_timeout 60\n", app: "drain.ru") do |server|
      old = booted(server, 2)
      sock, pid = hijack(server.port)
      assert_includes old, pid

      server.signal("USR2")
      assert_nil read_line(sock, timeout: 30, what: "the close at the restart"), "closed at once"
      server.wait_for(%r{^\[#{pid}\] - Restarting \(no drain\): closing the connection taken by GET /hijack from 127\.0\.0\.1, open [\d.]+ s$})
      refute_match(/Waiting up to/, server.stdout)

      server.wait_for(/\(inherited\)/, timeout: 30)
      fresh = booted(server, 4).last(2)
      assert_empty fresh & old
      assert_match(/\Aplain (#{fresh.join('|')})\z/, raw_request(server.port, REQUEST).body)
    ensure
      sock&.close
    end
  end

  # Worker 0 in template mode (fork_worker; also every preloaded cluster after a phased
  # restart) stops as every worker does: its in-flight request is answered, its hijacked
  # connection drained and logged, and nothing goes to stderr.
  def test_worker_0_as_template_drains_on_a_stop
    cluster("workers 2\nfork_worker 0\ndrain_timeout 3\n", app: "drain.ru") do |server|
      booted(server, 2)
      zero = worker_pid(server, 0)
      taken, waiting = with_only_one_worker_running([worker_pid(server, 1)]) do
        sock, pid = hijack(server.port)
        assert_equal zero, pid, "the /hijack connection is worker 0's"
        keep_alive = connect(server.port)
        keep_alive.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_equal "plain #{zero}", read_response(keep_alive).body, "a keep-alive connection on worker 0"
        [sock, keep_alive]
      end
      go = File.join(Dir.tmpdir, "catamount-go-#{Process.pid}-#{rand(1 << 30)}")
      waiting.write("GET /wait?#{go} HTTP/1.1\r\nHost: x\r\n\r\n")

      server.signal("TERM")
      server.wait_for(/^\[#{zero}\] - Waiting up to 3 s \(drain_timeout\) for 1 connection taken by the app/)
      assert_echoes(taken, "still there")
      File.write(go, "go")
      assert_equal "waited", read_response(waiting).body, "the in-flight request is answered"
      assert_nil read_line(taken, timeout: 30, what: "the close at the end of the drain time")
      assert wait_until { taken_closed_by(server, "GET /hijack") == [zero] }, server.stdout
      server.wait_exit(timeout: 30)
      assert_equal "", server.stderr
    ensure
      [taken, waiting].each { |s| s&.close }
      FileUtils.rm_f(go) if go
    end
  end

  # A hot restart that comes while a phased restart's old worker drains ends that drain too
  # (the restart pipe reaches draining workers): the connection is closed long before a drain
  # time of 60 s, and the restarted cluster serves.
  def test_a_hot_restart_ends_a_phased_restarts_drain
    cluster("workers 2\npreload_app! false\ndrain_timeout 60\nworker_shutdown_timeout 90\n", app: "drain.ru") do |server|
      booted(server, 2)
      sock, pid = hijack(server.port)
      server.signal("USR1")
      server.wait_for(/^\[#{pid}\] - Waiting up to 60 s \(drain_timeout\) for 1 connection taken by the app/, timeout: 30)
      assert_echoes(sock, "draining")
      server.signal("USR2")
      assert_nil read_line(sock, timeout: 30, what: "the close at the hot restart")
      server.wait_for(%r{^\[#{pid}\] - Restarting \(no drain\): closing the connection taken by GET /hijack from 127\.0\.0\.1, open [\d.]+ s$})
      server.wait_for(/\(inherited\)/, timeout: 30)
      assert_match(/\Aplain \d+\z/, raw_request(server.port, REQUEST).body)
    ensure
      sock&.close
    end
  end

  # A worker with nothing to drain holds its index until it has ended, as in Puma: a new
  # worker's on_worker_boot never runs while the old worker of its index is still alive (its
  # on_worker_shutdown takes a second here), on a phased restart (only a draining worker
  # overlaps its replacement).
  def test_a_worker_with_nothing_to_drain_ends_before_its_replacement_boots
    Dir.mktmpdir do |marks|
      hooks = <<~RUBY
        on_worker_boot do |i|
          old = File.read("#{marks}/w\#{i}").to_i if File.exist?("#{marks}/w\#{i}")
          alive = old ? (Process.kill(0, old) rescue false) : false
          File.write("#{marks}/log", "\#{i} \#{Process.pid} old alive: \#{alive}\n", mode: "a")
          File.write("#{marks}/w\#{i}", Process.pid.to_s)
        end
        on_worker_shutdown { sleep 1 }
      RUBY
      cluster("workers 2\npreload_app! false\n#{hooks}", app: "drain.ru") do |server|
        booted(server, 2)
        server.signal("USR1")
        server.wait_for(/Phased restart complete, phase: 1/, timeout: 60)
        log = File.read("#{marks}/log").lines
        assert_equal 4, log.size, log.join
        assert log.all? { |line| line.end_with?("old alive: false\n") }, log.join
      end
    end
  end
end
