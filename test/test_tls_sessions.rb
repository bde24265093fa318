# frozen_string_literal: true

require "helper"
require "certificates"
require "openssl"
require "timeout"

# What a TLS client negotiates, seen by a real client (Ruby's OpenSSL): ALPN `http/1.1` (and
# nothing a client offers beside it, such as `h2`), TLS 1.3 unless the client stops at 1.2, and
# sessions resumed on a new connection, with both versions. App: tls.ru.
class TestTlsSessions < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  def tls_port(dir)
    server = start_server("-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem", app: "tls.ru")
    server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i
  end

  # One request on a new TLS connection (resuming `session` when given); the connection, its
  # answer's status line and its session (the tickets arrive after the handshake: read first).
  def exchange(port, dir, session: nil, max_version: nil, alpn: nil)
    ctx = OpenSSL::SSL::SSLContext.new
    ctx.ca_file = "#{dir}/ca.pem"
    ctx.verify_mode = OpenSSL::SSL::VERIFY_PEER
    ctx.max_version = max_version if max_version
    ctx.alpn_protocols = alpn if alpn
    ctx.session_cache_mode = OpenSSL::SSL::SSLContext::SESSION_CACHE_CLIENT
    ssl = OpenSSL::SSL::SSLSocket.new(Socket.tcp("127.0.0.1", port, connect_timeout: 10), ctx)
    ssl.hostname = "localhost"
    ssl.sync_close = true
    ssl.session = session if session
    Timeout.timeout(20) do
      ssl.connect
      ssl.write("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
      answer = ssl.read
      [ssl, answer[/\A[^\r]*/], ssl.session]
    end
  ensure
    ssl&.close
  end

  def test_alpn_offers_http11_only
    Dir.mktmpdir do |dir|
      port = tls_port(certificates(dir))
      ssl, status, = exchange(port, dir, alpn: %w[h2 http/1.1])
      assert_equal "HTTP/1.1 200 OK", status
      assert_equal "http/1.1", ssl.alpn_protocol
      _, status, = exchange(port, dir)
      assert_equal "HTTP/1.1 200 OK", status, "a client that offers no ALPN is served too"
    end
  end

  def test_sessions_are_resumed_with_tls13_and_tls12
    Dir.mktmpdir do |dir|
      port = tls_port(certificates(dir))
      [nil, OpenSSL::SSL::TLS1_2_VERSION].each do |max|
        first, _, session = exchange(port, dir, max_version: max)
        assert_equal max ? "TLSv1.2" : "TLSv1.3", first.ssl_version
        refute first.session_reused?
        again, status, = exchange(port, dir, session: session, max_version: max)
        assert_equal "HTTP/1.1 200 OK", status
        assert again.session_reused?, "#{first.ssl_version}: the session is resumed"
      end
    end
  end
end
