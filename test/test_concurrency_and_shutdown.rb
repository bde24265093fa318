# frozen_string_literal: true

require "helper"

# The thread pool, slow clients that must not hold a Ruby thread, and graceful shutdown.
class TestConcurrencyAndShutdown < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def test_pool_grows_from_zero_to_max_when_work_waits
    server = start_server("-t", "0:3")
    threads = 3.times.map { Thread.new { get(server.port, "/barrier?n=3").body } }
    assert_equal %w[met met met], threads.map(&:value)
  end

  def test_pool_never_runs_more_than_max
    server = start_server("-t", "1:1")
    threads = 2.times.map { Thread.new { get(server.port, "/barrier?n=2&t=1").body } }
    # With one thread the two requests run one after the other: the first waits in vain.
    assert_equal %w[met timeout], threads.map(&:value).sort
  end

  # A response the pool thread made slowly (here: 30 ms asleep, longer than a new connection is
  # left in the backlog) while other requests wait for the only thread is written by the
  # reactor. Keep-alive, pipelining, bodiless answers and a closing one all come back whole and
  # in order for every client.
  def test_responses_handed_to_the_reactor_arrive_in_order
    assert_slow_pipelined_answers_arrive_in_order(start_server("-t", "1:1"))
  end

  # While requests wait for the only thread, the pool thread leaves the reactor's wake-up for a
  # slow request's answer to the reactor's next turn (crates/catamount-server/src/deferred_wakes.rs).
  # Here no request comes after the three sent at once, so the first two answers are sent only
  # because the reactor's tick does it: without the tick their clients would wait for ever.
  def test_answers_left_to_the_reactor_go_out_when_no_more_requests_come
    server = start_server("-t", "1:1")
    socks = 3.times.map do |i|
      connect(server.port).tap { |s| s.write("GET /sleep?s=0.05&i=#{i} HTTP/1.1\r\nHost: x\r\n\r\n") }
    end
    answers = socks.map { |sock| read_response(sock) }
    assert_equal [["200", "slept"]] * 3, answers.map { |r| [r.status.to_s, r.body] }
  ensure
    socks&.each(&:close)
  end

  # Pinned to one CPU the server never hands a response to the reactor (it would only preempt
  # the pool thread to write it): the pool thread writes the same answers, in the same order.
  def test_responses_of_a_server_on_one_cpu_arrive_in_order
    server = launch(["-t", "1:1", "-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "kitchen.ru")], boot: true,
                    command: ["taskset", "-c", "0", RbConfig.ruby, ServerProcess::BIN])
    assert_slow_pipelined_answers_arrive_in_order(server)
  end

  # Two cluster workers on two CPUs count on one each (config.rs `cpus_per_process`), so their
  # pool threads write slow answers themselves, as a server pinned to one CPU does: the same
  # answers, in the same order, whichever worker takes a connection.
  def test_responses_of_cluster_workers_sharing_two_cpus_arrive_in_order
    server = launch(["-w", "2", "-t", "1:1", "-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "kitchen.ru")],
                    boot: true, command: ["taskset", "-c", "0,1", RbConfig.ruby, ServerProcess::BIN])
    assert_slow_pipelined_answers_arrive_in_order(server)
  ensure
    kill_named_workers(server)
  end

  def assert_slow_pipelined_answers_arrive_in_order(server)
    clients = 4.times.map do |c|
      Thread.new do
        sock = connect(server.port)
        sock.write("GET /sleep?s=0.03 HTTP/1.1\r\nHost: x\r\n\r\n" \
                   "HEAD /sleep?s=0.03 HTTP/1.1\r\nHost: x\r\n\r\n" \
                   "GET /sleep?s=0.03&c=#{c} HTTP/1.1\r\nHost: x\r\n\r\n" \
                   "GET /sleep?s=0.03 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = [read_response(sock), read_response(sock, head_request: true), read_response(sock), read_response(sock)]
        [got.map { |r| "#{r.version} #{r.status}" }, got.map(&:body), got.last["connection"], read_until_close(sock)]
      ensure
        sock&.close
      end
    end
    clients.each do |client|
      assert_equal [["HTTP/1.1 200"] * 4, ["slept", "", "slept", "slept"], "close", ""], client.value
    end
  end

  def test_slow_header_client_does_not_block_a_one_thread_server
    server = start_server("-t", "1:1")
    slow = connect(server.port)
    slow.write("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    5.times { assert_equal "hello", get(server.port, "/").body }
    slow.write("done\r\n\r\n")
    assert_equal "hello", read_response(slow).body
  end

  # Up to the per-connection bound on bytes handed to the reactor (16 MiB); past it the thread
  # waits for the client (see the next test).
  def test_slow_reader_of_a_large_response_does_not_block_a_one_thread_server
    server = start_server("-t", "1:1")
    reader = Socket.new(:INET, :STREAM)
    reader.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 16 * 1024)
    reader.connect(Socket.sockaddr_in(server.port, "127.0.0.1"))
    reader.write("GET /big?mb=12 HTTP/1.1\r\nHost: x\r\n\r\n")
    # Read about 100 KiB/s for a moment, as a slow mobile client would.
    received = 0
    10.times do
      received += reader.readpartial(10 * 1024).bytesize if reader.wait_readable(1)
      sleep 0.1
    end
    assert_operator received, :>, 0
    # The only Ruby thread is free: other clients are answered while the download goes on.
    5.times { assert_equal "hello", get(server.port, "/").body }
    assert_operator received, :<, 12 << 20
  ensure
    reader&.close
  end

  # A client that does not read, asking for more than the per-connection hand-over bound
  # (16 MiB) and the socket buffers take.
  def slow_reader(port, path)
    sock = Socket.new(:INET, :STREAM)
    sock.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 16 * 1024)
    sock.connect(Socket.sockaddr_in(port, "127.0.0.1"))
    sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert sock.wait_readable(30), "the response never began"
    sock
  end

  # With spilling off (`max_spilled_total 0`; test_response_spill.rb has it on), an Array body
  # larger than the per-connection bound is handed to the reactor a piece at a time, the pool
  # thread waiting (without the GVL) for its client in between: while the client reads nothing,
  # the only thread is held (without the bound it would be free at once, all of the body copied
  # for the reactor), and once it reads, the body arrives whole and in order.
  def test_slow_readers_of_responses_past_the_hand_over_bound_get_them_whole
    server = start_server("-t", "1:1", "-C", no_spill_config, "-b", "tcp://127.0.0.1:0")
    mb = 32
    slow = slow_reader(server.port, "/counted?mb=#{mb}")
    other = connect(server.port)
    other.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # With the bound this cannot be answered before the slow client reads (a second is only
    # how long the test gives a server without the bound to show it).
    refute other.wait_readable(1), "the pool thread went on while its client read nothing"
    r = read_response(slow, timeout: 60)
    assert_equal 200, r.status
    assert_equal mb << 20, r.body.bytesize
    assert r.body == (0...(mb << 18)).to_a.pack("N*"), "the body arrived whole and in order"
    assert_equal "hello", read_response(other, timeout: 30).body
  ensure
    slow&.close
    other&.close
  end

  # The app changes a String of its body while the pool thread waits (without the GVL) for the
  # client (spilling off, so that it waits): what is left no longer matches the content-length
  # already sent, so the connection is aborted rather than sent a body of another length.
  def test_a_body_string_changed_while_its_client_is_waited_for_aborts_the_connection
    server = start_server("-t", "2:2", "-C", no_spill_config, "-b", "tcp://127.0.0.1:0")
    mb = 32
    slow = slow_reader(server.port, "/mutating?mb=#{mb}")
    assert_equal "mutated", get(server.port, "/mutate").body
    buf = +""
    loop do
      assert slow.wait_readable(30), "the connection was neither finished nor closed"
      buf << slow.readpartial(1 << 20)
    rescue EOFError, Errno::ECONNRESET
      break
    end
    head, body = buf.split("\r\n\r\n", 2)
    declared = head[/content-length: (\d+)/i, 1].to_i
    assert_equal mb << 20, declared
    assert_operator body.bytesize, :<, declared, "cut short, not sent more (or other) bytes than declared"
    server.wait_for(/changed length while the response was being sent/, stream: :stderr)
    assert_equal "hello", get(server.port, "/").body
  ensure
    slow&.close
  end

  def test_clients_that_vanish_mid_response_do_not_hurt_the_server
    server = start_server("-t", "1:1")
    Dir.mktmpdir do |dir|
      file = File.join(dir, "blob")
      File.binwrite(file, "f" * (8 << 20))
      %W[/big?mb=20 /stream?n=2000&size=10000 /file?path=#{file}].each do |path|
        3.times do
          sock = connect(server.port)
          sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\n\r\n")
          sock.wait_readable(5)
          sock.readpartial(1024)
          sock.setsockopt(Socket::SOL_SOCKET, Socket::SO_LINGER, [1, 0].pack("ii")) # reset, not FIN
          sock.close
        end
      end
    end
    5.times { assert_equal "hello", get(server.port, "/").body }
    refute server.exited?
  end

  # Large responses are written with the GVL released; with several threads busy, Ruby often
  # has a thread switch pending and skips the released call. The write must still happen (it once
  # aborted about one large response in a hundred).
  def test_large_responses_under_thread_contention_all_arrive
    server = start_server("-t", "5:5")
    @pending = {}
    failures = Queue.new
    clients = Array.new(8) do
      Thread.new do
        sock = connect(server.port)
        25.times do
          sock.write("GET /big?mb=1 HTTP/1.1\r\nHost: x\r\n\r\n")
          r = read_response(sock, timeout: 30)
          failures << "#{r.status} #{r.body.bytesize}" unless r.status == 200 && r.body.bytesize == 1 << 20
        end
      rescue StandardError => e
        failures << e.message[0, 200]
      ensure
        sock&.close
      end
    end
    clients.each { |t| assert t.join(60), "a client did not finish in 60 s" }
    assert_equal [], Array.new(failures.size) { failures.pop }
  end

  def test_sigterm_finishes_the_request_in_flight_then_ends_by_sigterm
    server = start_server
    sock = connect(server.port)
    sock.write("GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    server.wait_for(/./, timeout: 5) # booted
    sleep 0.2 # let the request reach the app; the assertion below does not depend on it
    idle = connect(server.port)
    server.signal("TERM")
    r = read_response(sock)
    assert_equal 200, r.status
    assert_equal "slept", r.body
    assert_equal "close", r["connection"]
    assert_equal "", read_until_close(idle)
    assert_equal Signal.list["TERM"], server.wait_exit.termsig
    assert_includes server.stdout, "Gracefully stopping"
    assert_raises(Errno::ECONNREFUSED) { connect(server.port) }
  end

  # A kept-alive connection that is in the middle of its second request's body when the stop
  # begins is still answered (within the stop grace), as one in the middle of its first is.
  def test_sigterm_waits_for_a_body_begun_on_a_kept_alive_connection
    server = start_server
    sock = connect(server.port)
    sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_equal 200, read_response(sock).status
    sock.write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n")
    assert_equal 100, read_response(sock).status # the head is in; the body is due
    sock.write("half")
    server.signal("TERM")
    wait_until_refused(server.port) # the stop has reached the reactor
    sock.write("done")
    r = read_response(sock)
    assert_equal "halfdone", r.body
    assert_equal "close", r["connection"]
    assert_equal "", read_until_close(sock)
    sock.close # else the server lingers for the client's close before it exits
    assert_equal Signal.list["TERM"], server.wait_exit.termsig
  end

  # A stop does not close a keep-alive connection used a moment ago under a client about to
  # send on it (a proxy's upstream connection): the next request still gets its answer, with
  # `Connection: close`, and only then does the connection end. (Puma closes idle connections
  # at once, so a request sent as the stop begins meets the close.) The "moment" is one second
  # of quiet: a machine too slow to send the next request within it proves nothing, and says so.
  def test_a_stop_answers_the_next_request_on_a_keep_alive_connection_used_a_moment_ago
    server = start_server
    clients = Array.new(4) { connect(server.port) }
    answered_at = clients.map do |sock|
      sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      assert_equal 200, read_response(sock).status
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
    server.signal("TERM")
    wait_until_refused(server.port) # the stop has reached the reactor; every client is idle
    quiet = clients.zip(answered_at).map do |sock, at|
      sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      Process.clock_gettime(Process::CLOCK_MONOTONIC) - at
    end
    skip "the machine was too slow to show it: quiet #{quiet.map { |q| q.round(2) }} s" if quiet.min >= 1
    clients.zip(quiet).each do |sock, q|
      next if q >= 1

      r = read_response(sock)
      assert_equal [200, "close"], [r.status, r["connection"]], "after #{q.round(3)} s of quiet"
      assert_equal "", read_until_close(sock)
    end
    clients.each(&:close)
    assert_equal Signal.list["TERM"], server.wait_exit.termsig
  end

  # Signals sent to the process are Ruby's: the native threads (reactor, log writer) block them
  # all, so the kernel always delivers them to a Ruby thread; the main thread, which runs the
  # traps, blocks none of the server's signals. A crash (SEGV, BUS, ILL, FPE) is never blocked,
  # so it is reported.
  def test_the_reactor_thread_blocks_signals_and_the_main_thread_does_not
    server = start_server("-t", "1:1")
    assert_equal "hello", get(server.port, "/").body
    server_signals = %w[TERM INT HUP QUIT USR1 USR2 CHLD]
    blocked = lambda do |status, signals = server_signals|
      mask = status[/^SigBlk:\s*(\h+)/, 1].to_i(16)
      signals.select { |sig| mask[Signal.list.fetch(sig) - 1] == 1 }
    end
    tasks = Dir.glob("/proc/#{server.pid}/task/*")
    reactor = tasks.find { |task| File.read("#{task}/comm").start_with?("catamount-react") }
    refute_nil reactor, "no reactor thread among #{tasks.size} threads"
    log_writer = tasks.find { |task| File.read("#{task}/comm").start_with?("catamount-log") }
    refute_nil log_writer, "no log writer thread among #{tasks.size} threads"
    [reactor, log_writer].each do |native|
      assert_equal server_signals, blocked.call(File.read("#{native}/status"))
      assert_equal [], blocked.call(File.read("#{native}/status"), %w[SEGV BUS ILL FPE])
    end
    assert_equal [], blocked.call(File.read("/proc/#{server.pid}/task/#{server.pid}/status"))
    server.signal("TERM")
    refute_nil server.wait_exit.termsig
  end

  def test_second_int_stops_at_once
    server = start_server
    sock = connect(server.port)
    sock.write("GET /sleep?s=60 HTTP/1.1\r\nHost: x\r\n\r\n")
    sleep 0.2
    server.signal("INT")
    server.wait_for(/Gracefully stopping/)
    server.signal("INT")
    server.wait_exit(timeout: 10)
    assert_includes server.stdout, "Stopping immediately"
  end

  def test_force_shutdown_after_bounds_the_wait
    dir = Dir.mktmpdir
    conf = File.join(dir, "puma.rb")
    File.write(conf, "force_shutdown_after 1\nbind 'tcp://127.0.0.1:0'\n")
    server = start_server("-C", conf)
    sock = connect(server.port)
    sock.write("GET /sleep?s=60 HTTP/1.1\r\nHost: x\r\n\r\n")
    sleep 0.2
    server.signal("TERM")
    server.wait_exit(timeout: 15)
    assert_includes server.stdout, "Stopping immediately"
  end

  # A config file that turns spilling responses to disk off (removed after the test).
  def no_spill_config
    dir = Dir.mktmpdir("no-spill")
    (@dirs ||= []) << dir
    File.join(dir, "puma.rb").tap { |path| File.write(path, "max_spilled_total 0\n") }
  end

  def teardown
    super
    @dirs&.each { |dir| FileUtils.rm_rf(dir) }
  end
end
