# frozen_string_literal: true

require "helper"

# Where the fiber mode puts a new request: a thread whose requests all wait may take one, but
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
    File.write(File.join(@dir, "puma.rb"), "fiber_scheduler\n")
  end

  def teardown
    super
    FileUtils.rm_rf(@dir)
  end

  def test_an_idle_thread_takes_a_new_request_before_a_thread_whose_request_waits
    server = start_server("-C", File.join(@dir, "puma.rb"), "-t", "2:2", "-b", "tcp://127.0.0.1:0",
                          File.join(@dir, "config.ru"), app: nil)
    listener = TCPServer.new("127.0.0.1", 0)
    waiting = connect(server.port)
    waiting.write("GET /?port=#{listener.addr[1]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert listener.wait_readable(15), "the waiting request never reached the app"
    app_side = listener.accept
    # Its thread now has a request that waits (and would take another); the other is idle.
    others = Array.new(20) { get(server.port, "/").body }
    app_side.write("go\n")
    response = read_response(waiting, timeout: 15)
    waiting_thread, said = response.body.split(" ", 2)
    assert_equal "read go", said
    assert_equal [], others.select { |t| t == waiting_thread }, "requests run beside the waiting one"
    assert_equal 1, others.uniq.size, "all on the idle thread"
  ensure
    app_side&.close
    listener&.close
    waiting&.close
  end
end
