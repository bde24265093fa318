# frozen_string_literal: true

require "helper"

# Where the fiber mode runs a new request: a thread whose requests all wait may take one, but
# an idle thread takes it first, so a request that never waits does not end up beside requests
# whose waits end meanwhile (they would wait for it, as they would not with a thread each).
class TestFibersPlacement < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  APP = <<~RUBY
    require "socket"
    run lambda { |env|
      thread = Thread.current.object_id.to_s
      port = env["QUERY_STRING"][/\\Aport=(\\d+)\\z/, 1]
      if port
        # Waits (in the scheduler) for a line from the test's listener.
        sock = TCPSocket.new("127.0.0.1", Integer(port))
        line = sock.wait_readable(20) && sock.gets
        sock.close
        thread += " read \#{line&.chomp}"
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
end
