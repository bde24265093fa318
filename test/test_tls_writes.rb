# frozen_string_literal: true

require "helper"
require "certificates"
require "openssl"
require "timeout"

# Responses over TLS are written by the pool thread straight into the session, as over plain
# TCP, until the socket is full; then the reactor takes the rest. These responses are larger
# than any socket buffer, read by a client with a tiny receive buffer, pipelined on one
# connection: every byte must arrive, in order, each response after the one before. App:
# tls_writes.ru.
class TestTlsWrites < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  # A TLS client whose socket holds 4 KiB: the server's writes meet a full socket at once.
  def tiny_client(port)
    tcp = Socket.new(:INET, :STREAM)
    tcp.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
    tcp.connect(Socket.sockaddr_in(port, "127.0.0.1"))
    ssl = OpenSSL::SSL::SSLSocket.new(tcp, OpenSSL::SSL::SSLContext.new.tap { |c| c.verify_mode = OpenSSL::SSL::VERIFY_NONE })
    ssl.sync_close = true
    ssl.connect
    ssl
  end

  # Reads one response (a content-length or chunked body) from `ssl`: [status, head, body].
  def read_response(ssl)
    head = +""
    head << ssl.readpartial(1) until head.end_with?("\r\n\r\n") # byte by byte: the body stays unread
    length = head[/^content-length: (\d+)/i, 1]
    body = length ? read_exactly(ssl, length.to_i) : read_chunked(ssl)
    [head[/\AHTTP\/1\.1 (\d{3})/, 1].to_i, head, body]
  end

  def read_exactly(ssl, count)
    out = +"".b
    out << ssl.readpartial([count - out.bytesize, 16_384].min) while out.bytesize < count
    out
  end

  def read_chunked(ssl)
    out = +"".b
    loop do
      size = ssl.gets("\r\n").to_i(16)
      out << read_exactly(ssl, size)
      ssl.gets("\r\n")
      return out if size.zero?
    end
  end

  def pattern(count)
    table = Array.new(251) { |i| ((i * 7) % 251).chr }.join.b
    (table * ((count / 251) + 1)).byteslice(0, count)
  end

  def test_large_pipelined_responses_reach_a_slow_reader_whole_and_in_order
    Dir.mktmpdir do |dir|
      certificates(dir)
      server = start_server("-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem", app: "tls_writes.ru")
      port = server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i
      Timeout.timeout(60) do
        ssl = tiny_client(port)
        sizes = [8 << 20, 3 << 20, 5, 1 << 20]
        paths = ["/big?n=#{sizes[0]}", "/parts?n=#{sizes[1]}", "/small", "/big?n=#{sizes[3]}"]
        ssl.write(paths.map { |p| "GET #{p} HTTP/1.1\r\nHost: localhost\r\n\r\n" }.join)
        answers = paths.map { read_response(ssl) }
        assert_equal [200] * 4, answers.map(&:first)
        assert_match(/transfer-encoding: chunked/i, answers[1][1])
        assert_equal pattern(sizes[0]), answers[0][2]
        assert_equal pattern(sizes[1]), answers[1][2]
        assert_equal "small", answers[2][2]
        assert_equal pattern(sizes[3]), answers[3][2]
        ssl.write("GET /small HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert_equal "small", read_response(ssl)[2], "the connection is still in step"
        ssl.close
      end
      assert_equal "", server.stderr
    end
  end

  # Responses of many sizes around what the socket holds, each read before the next is asked
  # for: each arrives whole, none is left in the session waiting for the client's next request
  # (which would wait for it in turn: the read below would time out). The case where the socket
  # fills in a response's last record is forced in crates/catamount-server/tests/tls.rs.
  def test_no_response_is_held_back_in_the_session
    Dir.mktmpdir do |dir|
      certificates(dir)
      server = start_server("-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem", app: "tls_writes.ru")
      port = server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i
      random = Random.new(7)
      Timeout.timeout(90) do
        ssl = tiny_client(port)
        300.times do
          size = random.rand(1_000..200_000)
          ssl.write("GET /big?n=#{size} HTTP/1.1\r\nHost: localhost\r\n\r\n")
          status, _, body = read_response(ssl)
          assert_equal [200, size], [status, body.bytesize]
        end
        ssl.close
      end
    end
  end
end
