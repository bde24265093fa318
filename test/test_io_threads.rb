# frozen_string_literal: true

require_relative "support/helper"

# Puma 8's `max_io_threads` and `env["puma.mark_as_io_bound"]` (docs/configuration.md,
# "IO-bound requests"): a request that marks itself IO-bound lets the pool run up to
# `max_io_threads` requests beyond `max`, the pool shrinks back when they end, and stats count
# the marked threads (`io_threads`) in single and cluster mode. The requests wait on a socket
# the test holds (test/apps/io_bound.ru), so the test decides when each one ends.
class TestIoThreads < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  # A request that should not get a thread is given this long to show up anyway: absence can
  # only be seen for a while (a slow machine makes the check weaker, never fail).
  NOT_YET = 0.5

  def setup
    super
    @hub = TCPServer.new("127.0.0.1", 0)
    @held = {}
  end

  def teardown
    @held.each_value { |h| h[:app]&.close }
    @hub&.close
    super
  end

  def serve(config)
    Dir.mktmpdir do |dir|
      File.write("#{dir}/c.rb", config)
      return start_server("-C", "#{dir}/c.rb", "-b", "tcp://127.0.0.1:0", app: "io_bound.ru")
    end
  end

  # Sends a /hold request named `name` (marked IO-bound with `mark`); does not wait for it.
  def send_hold(port, name, mark: false)
    client = connect(port)
    client.write("GET /hold?name=#{name}&port=#{@hub.addr[1]}#{'&mark=1' if mark} HTTP/1.1\r\nHost: x\r\n" \
                 "Connection: close\r\n\r\n")
    @held[name] = { client: client }
  end

  # Waits (bounded) for the next held request to enter the app; returns its name.
  def entered(timeout: 10)
    raise "no request entered the app within #{timeout} s" unless @hub.wait_readable(timeout)

    app = @hub.accept
    name = read_line(app, what: "a held request's name").to_s[/\Ain (\S+)/, 1]
    @held.fetch(name)[:app] = app
    name
  end

  # That no further request enters the app for a while.
  def assert_none_enters
    refute @hub.wait_readable(NOT_YET), "a request entered the app though no thread was free for it"
  end

  # Ends the held request `name` and reads its response.
  def release(name)
    held = @held.fetch(name)
    held[:app].write("go\n")
    response = read_response(held[:client])
    assert_equal [200, name], [response.status, response.body]
  ensure
    held[:client].close
  end

  # `Catamount.stats` as the held request `name` reads it.
  def stats_from(name)
    app = @held.fetch(name)[:app]
    app.write("stats\n")
    JSON.parse(read_line(app, what: "stats"), symbolize_names: true)
  end

  def pool(stats)
    stats.slice(:running, :pool_capacity, :busy_threads, :io_threads)
  end

  # An answer's body from the control server (the master's in a cluster).
  def control(server, path)
    url = server.stdout[%r{Starting control server on http://(\S+)}, 1]
    host, port = url.split(":")
    sock = TCPSocket.new(host, Integer(port))
    sock.write("GET #{path} HTTP/1.0\r\n\r\n")
    read_until_close(sock).split("\r\n\r\n", 2)[1]
  ensure
    sock&.close
  end

  def control_stats(server)
    JSON.parse(control(server, "/stats"), symbolize_names: true)
  end

  def test_a_marked_request_lets_one_more_run_and_the_pool_shrinks_back
    server = serve(<<~RUBY)
      threads 1, 1
      max_io_threads 1
      activate_control_app "tcp://127.0.0.1:0", no_token: true
    RUBY
    send_hold(server.port, "a", mark: true)
    assert_equal "a", entered
    send_hold(server.port, "b", mark: true)
    assert_equal "b", entered, "the marked request left room for a second"
    assert_equal({ running: 2, pool_capacity: 0, busy_threads: 2, io_threads: 2 }, pool(stats_from("b")))
    assert_equal 2, control_stats(server)[:io_threads], "io_threads over the control server"

    # Two marked, one allowed beyond max: the second takes max's place, so a third waits.
    send_hold(server.port, "c")
    assert_none_enters
    release("a")
    assert_equal "c", entered, "a's thread rejoined the pool for c (b is IO-bound)"
    assert_equal({ running: 2, io_threads: 1 }, pool(stats_from("c")).slice(:running, :io_threads))

    # b ends while c (not marked) fills max: b's thread leaves. (The stats request read below
    # is on the one thread left.)
    release("b")
    release("c")
    assert wait_until { pool(JSON.parse(get(server.port, "/stats").body, symbolize_names: true)) ==
                        { running: 1, pool_capacity: 0, busy_threads: 1, io_threads: 0 } },
           "back to max: #{get(server.port, '/stats').body}"
  end

  def test_without_the_mark_the_second_request_waits
    server = serve("threads 1, 1\nmax_io_threads 1\n")
    send_hold(server.port, "a")
    assert_equal "a", entered
    send_hold(server.port, "b")
    assert_none_enters
    assert_equal({ running: 1, io_threads: 0 }, pool(stats_from("a")).slice(:running, :io_threads))
    release("a")
    assert_equal "b", entered
    # Marked late, it lets a third in (the mark works any time in the request).
    send_hold(server.port, "c")
    assert_none_enters
    @held["b"][:app].write("mark\n")
    assert_equal "c", entered
    release("b")
    release("c")
  end

  def test_with_max_io_threads_0_the_mark_is_counted_and_adds_no_thread
    server = serve("threads 1, 1\n")
    key = JSON.parse(get(server.port, "/key").body, symbolize_names: true)
    assert_equal({ callable: true, frozen: true, answer: nil, twice: nil }, key.except(:id))
    assert_equal key[:id], JSON.parse(get(server.port, "/key").body, symbolize_names: true)[:id],
                 "one callable per thread, not one per request"
    send_hold(server.port, "a", mark: true)
    assert_equal "a", entered
    send_hold(server.port, "b")
    assert_none_enters
    assert_equal({ running: 1, io_threads: 1 }, pool(stats_from("a")).slice(:running, :io_threads))
    release("a")
    assert_equal "b", entered
    assert_equal({ running: 1, io_threads: 0 }, pool(stats_from("b")).slice(:running, :io_threads))
    release("b")
  end

  def test_cluster_workers_report_io_threads_to_the_master
    server = serve(<<~RUBY)
      workers 1
      threads 1, 1
      max_io_threads 1
      worker_check_interval 1
      activate_control_app "tcp://127.0.0.1:0", no_token: true
      control_metrics
    RUBY
    send_hold(server.port, "a", mark: true)
    assert_equal "a", entered
    send_hold(server.port, "b")
    assert_equal "b", entered
    io_threads = -> { control_stats(server)[:worker_status].first&.dig(:last_status, :io_threads) }
    assert wait_until(timeout: 15) { io_threads.call == 1 }, "io_threads in the worker's last_status"
    assert_match(/^catamount_threads_io\{worker="0"\} 1$/, control(server, "/metrics"))
    release("a")
    release("b")
    assert wait_until(timeout: 15) { io_threads.call.zero? }
  end
end
