# frozen_string_literal: true

require "helper"
require "certificates"
require "openssl"
require "timeout"

# `set_remote_address proxy_protocol: :v1` on a TLS listener: a proxy in TCP mode (HAProxy's
# `send-proxy`) sends its PROXY line in the clear, before the client's TLS handshake, often in
# the same packet as the ClientHello. The line names REMOTE_ADDR; a connection without one is
# served as it is; a malformed line closes the connection and is logged once. App: tls.ru.
class TestTlsProxy < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  LINE = "PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n"

  def tls_proxy_server(dir)
    start_tls_server(dir, "set_remote_address proxy_protocol: :v1\n")
  end

  # A proxy that sends the PROXY line in the same write as the first TLS bytes: the client's TLS
  # runs over one end of a socket pair, and a thread passes its bytes on to the server, the line
  # in front of the first chunk (the ClientHello).
  def through_one_write_proxy(port)
    client, inner = UNIXSocket.pair
    upstream = Socket.tcp("127.0.0.1", port, connect_timeout: 10)
    up = Thread.new do
      first = inner.readpartial(65_536)
      upstream.write(LINE + first)
      IO.copy_stream(inner, upstream)
      upstream.close_write
    rescue IOError, SystemCallError
      nil
    end
    down = Thread.new do
      IO.copy_stream(upstream, inner)
      inner.close_write
    rescue IOError, SystemCallError
      nil
    end
    yield client
  ensure
    client&.close
    [up, down].each { |t| t&.join(10) }
    [inner, upstream].each { |s| s&.close unless s&.closed? }
  end

  def test_the_proxy_line_before_the_handshake_names_the_client
    Dir.mktmpdir do |dir|
      certificates(dir)
      server, port = tls_proxy_server(dir)
      separate = Socket.tcp("127.0.0.1", port, connect_timeout: 10)
      separate.write(LINE)
      assert_equal "203.0.113.7", remote_over(separate, dir), "line, then the handshake"
      through_one_write_proxy(port) do |io|
        assert_equal "203.0.113.7", remote_over(io, dir), "line and ClientHello in one write"
      end
      assert_equal "127.0.0.1", remote_over(Socket.tcp("127.0.0.1", port, connect_timeout: 10), dir),
                   "no line: the handshake at once, the socket's peer"
      assert_equal "", server.stderr
    end
  end

  def test_a_malformed_proxy_line_closes_the_connection_and_is_logged
    Dir.mktmpdir do |dir|
      certificates(dir)
      server, port = tls_proxy_server(dir)
      bad = Socket.tcp("127.0.0.1", port, connect_timeout: 10)
      bad.write("PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n")
      assert_equal "", read_until_close(bad), "no answer, the connection ends"
      server.wait_for(/Closing a connection from 127\.0\.0\.1: malformed PROXY protocol line/, stream: :stderr)
      assert_equal "127.0.0.1", remote_over(Socket.tcp("127.0.0.1", port, connect_timeout: 10), dir),
                   "others are served"
    ensure
      bad&.close
    end
  end
end
