# frozen_string_literal: true

require "helper"

# Where the fiber mode runs requests: a thread whose requests all wait may take a new one, but
# an idle thread takes it first, so a request that never waits does not end up beside requests
# whose waits end meanwhile; and when it does (more requests than threads), those still get
# turns while it runs (FiberTimeslice), as threads would.
class TestFibersPlacement < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  APP = <<~RUBY
    require "socket"
    $read = false
    def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    run lambda { |env|
      if env["PATH_INFO"] == "/spin"
        # Never waits: says it started (a file write does not go through the scheduler), then
        # runs until the waiting request has read its line (or 15 s passed).
        File.write(env["QUERY_STRING"].delete_prefix("mark="), "spinning")
        deadline = now + 15
        spins = 0
        until $read || now > deadline
          spins += 1
        end
        next [200, {}, [$read ? "the other request ran" : "nobody else ran"]]
      end
      thread = Thread.current.object_id.to_s
      port = env["QUERY_STRING"][/\\Aport=(\\d+)\\z/, 1]
      if port
        # Waits (in the scheduler) for a line from the test's listener.
        sock = TCPSocket.new("127.0.0.1", Integer(port))
        line = sock.wait_readable(20) && sock.gets
        sock.close
        thread += " read \#{line&.chomp}"
        $read = true
      end
      [200, { "content-type" => "text/plain" }, [thread]]
    }
  RUBY

  def setup
    @dir = Dir.mktmpdir("catamount-fibers-placement")
    File.write(File.join(@dir, "config.ru"), APP)
    File.write(File.join(@dir, "puma.rb"), <<~RUBY)
      fiber_scheduler
      activate_control_app "tcp://127.0.0.1:0", no_token: true
    RUBY
  end

  def teardown
    super
    FileUtils.rm_rf(@dir)
  end

  # Threads with a request now, from the control server's /stats.
  def busy_threads(server)
    url = server.stdout[%r{Starting control server on http://(\S+)}, 1]
    host, port = url.split(":")
    sock = TCPSocket.new(host, Integer(port))
    sock.write("GET /stats HTTP/1.0\r\n\r\n")
    JSON.parse(read_until_close(sock).split("\r\n\r\n", 2)[1])["busy_threads"]
  ensure
    sock&.close
  end

  # A fiber-mode server with `threads`, and a request in its app waiting for a line on a socket
  # the test holds: [server, the request's connection, the app's socket (write "go\n" to it)].
  def server_with_a_waiting_request(threads)
    server = start_server("-C", File.join(@dir, "puma.rb"), "-t", threads, "-b", "tcp://127.0.0.1:0",
                          File.join(@dir, "config.ru"), app: nil)
    listener = TCPServer.new("127.0.0.1", 0)
    waiting = connect(server.port)
    waiting.write("GET /?port=#{listener.addr[1]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert listener.wait_readable(15), "the waiting request never reached the app"
    [server, waiting, listener.accept]
  ensure
    listener&.close
  end

  def test_an_idle_thread_takes_a_new_request_before_a_thread_whose_request_waits
    server, waiting, app_side = server_with_a_waiting_request("2:2")
    # Its thread now has a request that waits (and would take another); the other is idle
    # (once its last request is done: a request queued while it finishes one finds no idle
    # thread, and may go to either).
    others = Array.new(10) do
      assert wait_until(timeout: 15) { busy_threads(server) == 1 }, "the idle thread's request never ended"
      get(server.port, "/").body
    end
    app_side.write("go\n")
    response = read_response(waiting, timeout: 15)
    waiting_thread, said = response.body.split(" ", 2)
    assert_equal "read go", said
    assert_equal [], others.select { |t| t == waiting_thread }, "requests run beside the waiting one"
    assert_equal 1, others.uniq.size, "all on the idle thread"
  ensure
    app_side&.close
    waiting&.close
  end

  # One thread: a request waits on the test's socket, a request that never waits runs beside it
  # (the thread took it while the first waited). The first one's line arrives: it must get a
  # turn to read it while the second still runs, which ends only once the first has read.
  def test_a_request_that_never_waits_gives_turns_to_the_requests_beside_it
    server, waiting, app_side = server_with_a_waiting_request("1:1")
    spinning = connect(server.port)
    mark = File.join(@dir, "spinning")
    spinning.write("GET /spin?mark=#{mark} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_equal "spinning", wait_for_file(mark, timeout: 15)
    app_side.write("go\n")
    assert_match(/ read go\z/, read_response(waiting, timeout: 20).body)
    assert_equal "the other request ran", read_response(spinning, timeout: 20).body
  ensure
    app_side&.close
    waiting&.close
    spinning&.close
  end
end
