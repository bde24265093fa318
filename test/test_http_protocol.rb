# frozen_string_literal: true

require "helper"

# The HTTP/1.1 codec over real sockets: framing, keep-alive, limits, smuggling vectors.
class TestHttpProtocol < Minitest::Test
  include Support::ServerTest
  include Support::KitchenServer
  parallelize_me!

  def test_keep_alive_and_pipelining_answer_in_order
    sock = connect(port)
    sock.write("GET /status?code=201 HTTP/1.1\r\nHost: x\r\n\r\nGET /status?code=202 HTTP/1.1\r\nHost: x\r\n\r\n" \
               "GET /status?code=203 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    statuses = 3.times.map { read_response(sock).status }
    assert_equal [201, 202, 203], statuses
    assert_equal "", read_until_close(sock)
  end

  def test_http10_closes_unless_keep_alive_asked
    r = raw_request(port, "GET / HTTP/1.0\r\n\r\n")
    assert_equal "HTTP/1.0", r.version
    assert_equal "hello", r.body
    sock = connect(port)
    sock.write("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = read_response(sock)
    assert_equal "keep-alive", r["connection"]
    sock.write("GET / HTTP/1.0\r\n\r\n")
    assert_equal 200, read_response(sock).status
    assert_equal "", read_until_close(sock)
  end

  def test_connection_close_is_honoured
    sock = connect(port)
    sock.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = read_response(sock)
    assert_equal "close", r["connection"]
    assert_equal "", read_until_close(sock)
  end

  def rejected(raw, status)
    sock = connect(port)
    sock.write(raw)
    data = read_until_close(sock)
    assert_match(/\AHTTP\/1\.1 #{status} /, data, raw.inspect)
    assert_match(/^connection: close\r$/, data, raw.inspect)
    data
  ensure
    sock&.close
  end

  def test_malformed_requests_get_400_and_server_keeps_serving
    [
      "GET / HTTP/1.1\r\n\r\n",                                              # no Host on 1.1
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",                        # two Hosts
      "GET / HTTP/1.1\nHost: x\n\n",                                         # bare LF
      "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",                        # bare CR
      "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",                        # NUL
      "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  folded\r\n\r\n",              # obs-fold
      "GET / HTTP/1.1\r\nHost: x\r\nBad : v\r\n\r\n",                        # space before colon
      "GET / HTTP/1.1\r\nHost: x\r\nB(d: v\r\n\r\n",                         # non-token name
      "GET /\r\n\r\n",                                                       # HTTP/0.9
      "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",                                  # double space
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"
    ].each { |raw| rejected(raw, 400) }
    assert_equal "hello", get(port, "/").body
  end

  def test_limits_get_414_431_and_the_rest_501_505
    rejected("GET /#{'a' * 8193} HTTP/1.1\r\nHost: x\r\n\r\n", 414)
    rejected("GET /?#{'q' * 10_241} HTTP/1.1\r\nHost: x\r\n\r\n", 414)
    rejected("GET / HTTP/1.1\r\nHost: x\r\n#{'N' * 257}: v\r\n\r\n", 431)
    rejected("GET / HTTP/1.1\r\nHost: x\r\nBig: #{'v' * 81_921}\r\n\r\n", 431)
    rejected("GET / HTTP/1.1\r\nHost: x\r\n#{(1..201).map { |i| "H#{i}: v\r\n" }.join}\r\n", 431)
    rejected("GET / HTTP/1.1\r\nHost: x\r\n#{(1..4).map { |i| "H#{i}: #{'v' * 30_000}\r\n" }.join}\r\n", 431)
    rejected("FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501)
    rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501)
    rejected("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505)
    assert_equal "hello", get(port, "/").body
  end

  def test_at_the_limits_is_accepted
    assert_equal 404, raw_request(port, "GET /#{'a' * 8191} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status
    assert_equal 200, raw_request(port, "GET / HTTP/1.1\r\nHost: x\r\n#{'N' * 256}: #{'v' * 81_920}\r\nConnection: close\r\n\r\n").status
  end

  def test_post_with_length_and_chunked_with_extensions_and_trailers
    r = raw_request(port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    assert_equal "hello", r.body
    r = raw_request(port, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" \
                          "5;ext=\"q\"\r\nhello\r\n6\r\n world\r\n0\r\nTrailer-A: 1\r\n\r\n")
    assert_equal "hello world", r.body
  end

  def test_large_body_is_received_whole
    payload = Random.new(7).bytes(300_000)
    r = raw_request(port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: #{payload.bytesize}\r\nConnection: close\r\n\r\n#{payload}")
    assert_equal payload.bytesize, r.body.bytesize
    assert_equal payload, r.body.b
  end

  def test_expect_100_continue
    sock = connect(port)
    sock.write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    interim = read_response(sock)
    assert_equal 100, interim.status
    sock.write("data")
    assert_equal "data", read_response(sock).body
  end

  # After the 100 the server has read the whole head and none of the body, so the body (small
  # enough to stay in memory) is read in pieces straight into its own buffer, which has room for
  # more: the start of the next request, read in the same packet, must still go to that request.
  def test_a_body_read_in_pieces_ends_where_the_pipelined_request_begins
    payload = Random.new(11).bytes(90_000)
    sock = connect(port)
    sock.write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: #{payload.bytesize}\r\nExpect: 100-continue\r\n\r\n")
    assert_equal 100, read_response(sock).status
    sock.write(payload[0, 30_000])
    sock.write(payload[30_000..] + "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnext")
    assert_equal payload, read_response(sock).body.b
    assert_equal "next", read_response(sock).body
    assert_equal "", read_until_close(sock)
  end

  # Body buffers are kept and reused from one request to the next: a shorter body after a longer
  # one, on the same connection and on another, carries nothing of the one before.
  def test_bodies_in_reused_buffers_carry_nothing_of_earlier_ones
    long = Random.new(12).bytes(100_000)
    short = Random.new(13).bytes(20_000)
    sock = connect(port)
    [long, short, long, short].each do |payload|
      sock.write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: #{payload.bytesize}\r\n\r\n#{payload}")
      assert_equal payload, read_response(sock).body.b
    end
    r = raw_request(port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: #{short.bytesize}\r\nConnection: close\r\n\r\n#{short}")
    assert_equal short, r.body.b
  end

  # A head is read at most 16 KiB at a time; body bytes read with it are moved to the body's
  # buffer, and consumed bytes leave the front of the connection buffer. One long burst of
  # pipelined requests (bodies of every size, small GETs between them) crosses every boundary
  # of that and must come back whole and in order.
  def test_a_burst_of_pipelined_requests_with_bodies_is_answered_in_order
    bodies = (1..40).map { |i| Random.new(i).bytes(i * 1_531) }
    burst = bodies.each_with_index.map do |body, i|
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: #{body.bytesize}\r\n\r\n#{body}" +
        "GET /status?code=#{200 + (i % 7)} HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    end.join
    sock = connect(port)
    writer = Thread.new { sock.write(burst) }
    bodies.each_with_index do |body, i|
      assert_equal body, read_response(sock).body.b, "body #{i}"
      3.times { assert_equal 200 + (i % 7), read_response(sock).status, "after body #{i}" }
    end
    assert writer.join(10), "the burst was not taken in"
  ensure
    sock&.close
  end

  def test_head_and_bodiless_statuses
    sock = connect(port)
    sock.write("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = read_response(sock, head_request: true)
    assert_equal "5", r["content-length"]
    sock.write("GET /status?code=204 HTTP/1.1\r\nHost: x\r\n\r\nGET /status?code=304 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r204 = read_response(sock)
    assert_equal 204, r204.status
    assert_nil r204["content-length"]
    assert_equal 304, read_response(sock).status
    assert_equal "hello", read_response(sock).body
  end

  def test_idle_keep_alive_and_half_sent_heads_time_out
    server = start_server("-C", conf("persistent_timeout 1\nfirst_data_timeout 1\nbind 'tcp://127.0.0.1:0'\n"), app: "kitchen.ru")
    sock = connect(server.port)
    sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_equal 200, read_response(sock).status
    assert_equal "", read_until_close(sock, timeout: 10)
    sock = connect(server.port)
    sock.write("GET / HTTP/1.1\r\nHo")
    assert_equal "", read_until_close(sock, timeout: 10)
    sock = connect(server.port)
    sock.write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert_match(/\AHTTP\/1\.1 408 /, read_until_close(sock, timeout: 10))
  end

  # While a response is being made the reactor also reads the client's next bytes; neither a
  # response slower than the idle timeout, nor a client that half-closes after its request, nor
  # a request sent before the previous answer, may change what the client gets.
  def test_responses_slower_than_the_idle_timeout_half_close_and_early_next_request
    server = start_server("-C", conf("persistent_timeout 1\nbind 'tcp://127.0.0.1:0'\n"), app: "kitchen.ru")
    sock = connect(server.port)
    sock.write("GET /sleep?s=2.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_equal "slept", read_response(sock, timeout: 10).body
    sock.write("GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
    sleep 0.1 # the second request goes out while the first is still in the app
    sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_equal "slept", read_response(sock).body
    assert_equal "hello", read_response(sock).body
    half = connect(server.port)
    half.write("GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
    half.close_write
    assert_match(/\AHTTP\/1\.1 200 .*slept\z/m, read_until_close(half))
  end

  def test_max_keep_alive_closes_after_n_requests
    server = start_server("-C", conf("max_keep_alive 2\nbind 'tcp://127.0.0.1:0'\n"), app: "kitchen.ru")
    sock = connect(server.port)
    sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_nil read_response(sock)["connection"]
    assert_equal "close", read_response(sock)["connection"]
    assert_equal "", read_until_close(sock)
  end

  def test_keep_alives_disabled
    server = start_server("-C", conf("enable_keep_alives false\nbind 'tcp://127.0.0.1:0'\n"), app: "kitchen.ru")
    sock = connect(server.port)
    sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_equal "close", read_response(sock)["connection"]
  end

  private

  def conf(text)
    dir = Dir.mktmpdir
    path = File.join(dir, "puma.rb")
    File.write(path, text)
    path
  end
end
