# frozen_string_literal: true

require "helper"

# A Rails 6.1 ActionCable channel end to end (test/apps/cable/config.ru, Debian's ruby-rails
# gems, the async adapter) on Catamount, driven by a real client speaking ActionCable's
# protocol (Python's `websockets`, test/support/actioncable_client.py).
class TestActioncable < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  CLIENT = File.join(__dir__, "support", "actioncable_client.py")

  # On one pool thread: a subscription confirmed and a message echoed; plain requests answered
  # while that connection stays open; a broadcast from a second connection reaching both; a
  # server ping; clean closes; nothing on stderr that looks like an error.
  def test_echo_and_broadcast_on_one_thread_beside_plain_requests
    assert File.executable?(PYTHON), "#{PYTHON} missing: script/bootstrap installs websockets there"
    server = start_server("-t", "1:1", app: "cable/config.ru")
    origin = "http://127.0.0.1:#{server.port}"
    IO.popen([PYTHON, CLIENT, "ws://127.0.0.1:#{server.port}/cable", origin], "r+", err: %i[child out]) do |io|
      first = JSON.parse(read_report(io))
      assert_equal({ "subprotocol" => "actioncable-v1-json", "welcome" => "welcome",
                     "confirm" => "confirm_subscription", "identifier" => '{"channel": "EchoChannel"}' },
                   first["subscribed"])
      assert_equal({ "echo" => { "text" => "héllo" } }, first["echoed"])
      3.times { assert_equal "plain", get(server.port, "/").body }
      io.puts("go")
      second = JSON.parse(read_report(io))
      assert_equal({ "broadcast" => "to all" }, second["to_a"])
      assert_equal({ "broadcast" => "to all" }, second["to_b"])
      assert second["ping"], "the server's ping carries its time"
      assert_equal [1000, 1000], second["closed"]
    end
    assert $?.success?
    assert_equal "plain", get(server.port, "/").body
    refute_match(/error|exception|warn/i, server.stderr)
  end

  # A request from an origin not allowed is refused (ActionCable's forgery protection answers
  # 404) and its error is logged on stderr: the stderr the test above finds free of errors.
  def test_an_unknown_origin_is_refused
    server = start_server("-t", "1:1", app: "cable/config.ru")
    sock = connect(server.port)
    sock.write("GET /cable HTTP/1.1\r\nHost: 127.0.0.1:#{server.port}\r\nUpgrade: websocket\r\n" \
               "Connection: Upgrade\r\nOrigin: http://elsewhere.example\r\n" \
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert_equal 404, read_response(sock).status
    server.wait_for(/Request origin not allowed: http:\/\/elsewhere\.example/, stream: :stderr)
  ensure
    sock&.close
  end
end
