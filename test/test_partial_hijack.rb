# frozen_string_literal: true

require "helper"

# Partial hijack: the Rack 2 `rack.hijack` response header and Rack 3 callable bodies get a
# stream after the head; unlike Puma (which closes the connection unframed) the body is framed,
# chunked without a content-length, and the connection stays alive. A 101 Switching Protocols
# with a callable hands over the raw connection, `upgrade` naming the app's `rack.protocol`
# (chosen from `env["rack.protocol"]`, the client's offer). App: partial_hijack.ru.
class TestPartialHijack < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def partial_server
    start_server(app: "partial_hijack.ru")
  end

  # Sends `raw` on a new connection and reads everything until the server closes it.
  def until_closed(port, raw)
    sock = connect(port)
    sock.write(raw)
    read_until_close(sock)
  ensure
    sock&.close
  end

  def request(sock, path, headers = "")
    sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\n#{headers}\r\n")
    read_response(sock)
  end

  def test_rack2_hijack_header_gets_a_framed_stream_and_keep_alive
    server = partial_server
    sock = connect(server.port)
    response = request(sock, "/rack2")
    assert_equal 200, response.status
    assert_equal "chunked", response["transfer-encoding"]
    assert_equal "text/plain", response["content-type"]
    assert_nil response["rack.hijack"]
    assert_equal "rack2 partial", response.body
    assert_equal "plain", request(sock, "/").body, "the same connection serves on"
  ensure
    sock&.close
  end

  def test_callable_body_goes_out_chunked_and_the_connection_serves_the_next_request
    server = partial_server
    sock = connect(server.port)
    response = request(sock, "/callable")
    assert_equal 200, response.status
    assert_equal "chunked", response["transfer-encoding"]
    assert_nil response["connection"]
    assert_equal "one two", response.body
    second = request(sock, "/callable")
    assert_equal "one two", second.body
    assert_equal "plain", request(sock, "/").body
  ensure
    sock&.close
  end

  def test_callable_body_with_a_content_length_is_sent_as_written
    server = partial_server
    sock = connect(server.port)
    response = request(sock, "/callable-length")
    assert_equal "11", response["content-length"]
    assert_nil response["transfer-encoding"]
    assert_equal "hello world", response.body
    assert_equal "plain", request(sock, "/").body
  ensure
    sock&.close
  end

  # A thread the app left behind cannot write into a later response through the stream.
  def test_the_stream_refuses_writes_once_its_callable_returned
    server = partial_server
    sock = connect(server.port)
    assert_equal "left", request(sock, "/leave").body
    assert_equal "IOError", request(sock, "/late").body
  ensure
    sock&.close
  end

  # A client that leaves stops an endless callable: its write raises the write's error.
  def test_a_client_leaving_stops_an_endless_callable
    server = partial_server
    sock = connect(server.port)
    sock.write("GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.wait_readable(10)
    assert_match(%r{\AHTTP/1\.1 200 OK\r\n}, sock.readpartial(4096))
    sock.close
    assert_equal '"true"', get(server.port, "/ended").body
  end

  # The head went out before the call: the body is cut short (no last chunk), the connection
  # closed, the error logged, and the server serves on.
  def test_a_callable_raising_closes_the_connection_and_is_logged
    server = partial_server
    raw = until_closed(server.port, "GET /raise HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_match(%r{\AHTTP/1\.1 200 OK\r\n}, raw)
    assert_includes raw, "7\r\npartial\r\n"
    refute_includes raw, "0\r\n\r\n"
    server.wait_for(/the callable fails/, stream: :stderr)
    assert_equal "plain", get(server.port, "/").body
  end

  def test_rack_protocol_lists_the_offered_protocols_only_with_connection_upgrade
    server = partial_server
    sock = connect(server.port)
    offered = request(sock, "/protocols", "Connection: keep-alive, Upgrade\r\nUpgrade: echo, websocket\r\n")
    assert_equal '["echo", "websocket"]', offered.body
    assert_equal '"none"', request(sock, "/protocols", "Upgrade: echo\r\n").body
    assert_equal '"none"', request(sock, "/protocols").body
  ensure
    sock&.close
  end

  def test_upgrade_with_rack_protocol_gives_a_raw_echo_stream
    server = partial_server
    sock = connect(server.port)
    response = request(sock, "/upgrade", "Connection: Upgrade\r\nUpgrade: websocket, echo\r\n")
    assert_equal 101, response.status
    assert_equal "echo", response["upgrade"]
    assert_equal "upgrade", response["connection"]
    assert_nil response["transfer-encoding"]
    assert_nil response["content-length"]
    sock.write("ping ")
    sock.write("GET / HTTP/1.1\r\n\r\n quit")
    assert_equal "ping GET / HTTP/1.1\r\n\r\n quit", read_until_close(sock), "raw bytes both ways, no HTTP"
    assert_equal "plain", get(server.port, "/").body
    # rack.response_finished once the callable returned: the 101 and the app's headers.
    assert_equal '[101, {"rack.protocol"=>"echo", "x-up"=>"1"}, nil]', get(server.port, "/ended").body
  ensure
    sock&.close
  end

  # Bytes the client sent right behind the upgrade request reach the callable first.
  def test_upgrade_early_bytes_are_read_first
    server = partial_server
    raw = until_closed(server.port, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly quit")
    head, echoed = raw.split("\r\n\r\n", 2)
    assert_match(%r{\AHTTP/1\.1 101 Switching Protocols\r\n}, head)
    assert_equal "early quit", echoed
  end

  def test_callables_and_upgrades_under_gc_stress
    server = start_server(app: "partial_hijack_gc_stress.ru")
    sock = connect(server.port)
    assert_equal "rack2 partial", request(sock, "/rack2").body
    assert_equal "one two", request(sock, "/callable").body
    assert_equal "hello world", request(sock, "/callable-length").body
    assert_equal '["echo", "websocket"]', request(sock, "/protocols", "Connection: upgrade\r\nUpgrade: echo, websocket\r\n").body
    assert_equal 101, request(sock, "/upgrade", "Connection: upgrade\r\nUpgrade: echo\r\n").status
    sock.write("bye quit")
    assert_equal "bye quit", read_until_close(sock, timeout: 30)
  ensure
    sock&.close
  end

  def test_upgrade_with_a_rack2_hijack_header_gives_the_raw_stream
    server = partial_server
    raw = until_closed(server.port, "GET /upgrade-rack2 HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nraw quit")
    head, echoed = raw.split("\r\n\r\n", 2)
    assert_equal "HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade", head
    assert_equal "raw quit", echoed
  end

  # RFC 9110 §7.8 and §15.2.2: no switch unless the client offered one, and only to a protocol
  # it offered; an HTTP/1.0 request's Upgrade is ignored. The broken 101 becomes a 500, logged.
  def test_a_switch_the_client_did_not_offer_is_a_500
    server = partial_server
    sock = connect(server.port)
    assert_equal 500, request(sock, "/upgrade-anyway", "Connection: upgrade\r\nUpgrade: websocket\r\n").status
    server.wait_for(/a 101 Switching Protocols to "h2c", which the client did not offer \(it offered "websocket"\)/, stream: :stderr)
    assert_equal 500, until_closed(server.port, "GET /upgrade-rack2 HTTP/1.1\r\nHost: x\r\n\r\n")[/\AHTTP\/1.1 (\d+)/, 1].to_i
    server.wait_for(/a 101 Switching Protocols answers a request that offered no upgrade/, stream: :stderr)
    # An ordinary body changes nothing: no 1xx to HTTP/1.0, no switch nobody asked for.
    assert_match %r{\AHTTP/1.0 500 }, until_closed(server.port, "GET /plain-101 HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
    assert_match %r{\AHTTP/1.1 500 }, until_closed(server.port, "GET /plain-101 HTTP/1.1\r\nHost: x\r\n\r\n")
    old = until_closed(server.port, "GET /protocols HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
    assert old.end_with?("\r\n\r\n\"none\""), old
    assert_equal "plain", get(server.port, "/").body
  ensure
    sock&.close
  end

  def test_upgrade_not_offered_is_an_ordinary_response
    server = partial_server
    response = get(server.port, "/upgrade")
    assert_equal 426, response.status
    assert_equal "echo only", response.body
  end
end
