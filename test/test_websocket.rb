# frozen_string_literal: true

require "helper"
require "timeout"

# A real WebSocket app end to end on full hijack: Debian's websocket-driver in the app
# (test/apps/websocket.ru, connections served by one event-loop thread of the app's own), driven
# by a real client (Python's `websockets`, test/support/websocket_client.py) and by hand-made
# frames where the client must misbehave on purpose (a frame sent before the 101).
class TestWebsocket < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  CLIENT = File.join(__dir__, "support", "websocket_client.py")

  def ws_server(*args)
    start_server(*args, app: "websocket.ru")
  end

  def url(server, path = "/ws")
    "ws://127.0.0.1:#{server.port}#{path}"
  end

  # Runs the client's `command` and returns its one JSON report.
  def client(*args)
    assert File.executable?(PYTHON), "#{PYTHON} missing: script/bootstrap installs websockets there"
    out = IO.popen([PYTHON, CLIENT, *args], err: %i[child out], &:read)
    assert $?.success?, "the client failed:\n#{out}"
    JSON.parse(out.lines.last)
  end

  def test_text_and_binary_messages_are_echoed
    server = ws_server
    report = client("echo", url(server))
    assert_equal "héllo", report["text"]
    assert_equal [0, 1, 2, 255], report["binary"]
    assert report["binary_is_bytes"], "a binary message comes back as a binary frame"
  end

  def test_a_ping_is_answered_by_its_pong
    server = ws_server
    assert_equal({ "pong" => true }, client("ping", url(server)))
  end

  # The server's close (code and reason reach the client) and the client's (the server answers
  # it with the same code: a clean close on both sides).
  def test_close_handshakes_either_side
    server = ws_server
    report = client("close", url(server))
    assert_equal({ "code" => 4000, "reason" => "bye" }, report["by_server"])
    assert_equal 1000, report["by_client"]["code"]
    assert_equal 1000, report["by_client"]["rcvd"]
  end

  # 200 WebSocket connections open at once on one pool thread, a message exchanged on each, while
  # plain HTTP requests are answered; then a second message on each still gets through.
  def test_two_hundred_connections_on_one_thread_beside_plain_requests
    server = ws_server("-t", "1:1")
    IO.popen([PYTHON, CLIENT, "many", url(server), "200"], "r+", err: %i[child out]) do |io|
      ready = JSON.parse(read_report(io))
      assert_equal({ "ready" => 200, "echoed" => 200 }, ready)
      5.times { assert_equal "plain", get(server.port, "/").body }
      io.puts("go")
      assert_equal({ "done" => 200, "echoed" => 200, "closed" => 200 }, JSON.parse(read_report(io)))
    end
    assert $?.success?
  end

  # A client that sends its first frame in the same write as its upgrade request (before the
  # 101, which RFC 6455 forbids but a client may do): the frame reaches the server with the
  # request head and is handed to the app first in the IO's buffer, where IO.select sees it.
  def test_a_frame_sent_before_the_101_is_answered
    server = ws_server
    sock = connect(server.port)
    sock.write(upgrade_request(server.port, "/ws") + masked_text_frame("early bird"))
    assert_match(%r{\AHTTP/1\.1 101 }, read_head(sock))
    assert_equal "early bird", read_text_frame(sock)
  ensure
    sock&.close
  end

  # An app whose event loop polls the descriptors itself (nio4r's NIO::Selector, as ActionCable's
  # does) serves a client that waits for the 101 as RFC 6455 says (an early frame would wait in
  # the IO's buffer unseen by it: docs/architecture.md, "Full hijack").
  def test_an_nio4r_event_loop_echoes
    server = ws_server
    report = client("echo", url(server, "/ws-nio"))
    assert_equal "héllo", report["text"]
    assert_equal [0, 1, 2, 255], report["binary"]
  end

  private

  def upgrade_request(port, path)
    "GET #{path} HTTP/1.1\r\nHost: 127.0.0.1:#{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
  end

  # A final text frame as a client must send it (masked; payload under 126 bytes).
  def masked_text_frame(text)
    mask = [1, 2, 3, 4]
    payload = text.bytes.each_with_index.map { |b, i| b ^ mask[i % 4] }
    [0x81, 0x80 | payload.size, *mask, *payload].pack("C*")
  end

  def read_exactly(sock, n, timeout: 10)
    data = +""
    while data.bytesize < n
      raise "timed out after #{data.inspect}" unless sock.wait_readable(timeout)

      data << sock.readpartial(n - data.bytesize)
    end
    data
  end

  def read_head(sock)
    head = +""
    head << read_exactly(sock, 1) until head.end_with?("\r\n\r\n")
    head
  end

  # The payload of an unmasked server text frame under 126 bytes.
  def read_text_frame(sock)
    first, second = read_exactly(sock, 2).bytes
    assert_equal 0x81, first, "a final text frame"
    read_exactly(sock, second).force_encoding(Encoding::UTF_8)
  end
end
