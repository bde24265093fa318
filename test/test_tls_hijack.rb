# frozen_string_literal: true

require "helper"
require "certificates"
require "digest"

# Connections taken by the app over TLS (`ssl://` binds): full hijack, 101 upgrades (partial
# hijack), WebSockets (wss://, websocket-driver and ActionCable) and the stop's drain. The
# reactor keeps the TLS session and relays plaintext through a UNIX socket pair, whose other end
# is the app's IO. Clients: Ruby's OpenSSL::SSL::SSLSocket, Python's `websockets`. Apps:
# tls_hijack.ru, partial_hijack.ru, websocket.ru, cable/config.ru, drain.ru.
class TestTlsHijack < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  # The piece /bulk writes over and over (tls_hijack.ru's PIECE).
  PIECE = (0...65_536).map { |i| (i % 251).chr }.join.b.freeze

  def setup
    super
    @dir = Dir.mktmpdir("catamount-tls-hijack")
    certificates(@dir)
  end

  def teardown
    super
    FileUtils.rm_rf(@dir)
  end

  def tls_bind
    "ssl://127.0.0.1:0?cert=#{@dir}/cert.pem&key=#{@dir}/key.pem"
  end

  # A server on a TLS bind (and its port) serving `app`.
  def tls_server(app, *args)
    server = start_server("-b", tls_bind, *args, app: app)
    [server, server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i]
  end

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # A TLS client connection (the test CA trusted, the name checked), handshake bounded.
  def tls_connect(port)
    tcp = Socket.tcp("127.0.0.1", port, connect_timeout: 5)
    context = OpenSSL::SSL::SSLContext.new
    context.set_params(ca_file: "#{@dir}/ca.pem", verify_mode: OpenSSL::SSL::VERIFY_PEER)
    ssl = OpenSSL::SSL::SSLSocket.new(tcp, context)
    ssl.hostname = "localhost"
    ssl.sync_close = true
    ssl.sync = true
    deadline = now + 10
    loop do
      case ssl.connect_nonblock(exception: false)
      when :wait_readable then raise "handshake timed out" unless tcp.wait_readable(deadline - now)
      when :wait_writable then raise "handshake timed out" unless tcp.wait_writable(deadline - now)
      else return ssl
      end
    end
  end

  # Reads until `bytes` arrived (all when nil) or the server's side ended. Returns the data and
  # whether the end was TLS's clean one (close_notify).
  def tls_read(ssl, bytes: nil, timeout: 10)
    deadline = now + timeout
    data = +""
    loop do
      return [data, false] if bytes && data.bytesize >= bytes

      left = deadline - now
      raise "timed out reading (got #{data.inspect[0, 300]})" unless left.positive?

      case (got = ssl.read_nonblock(65_536, exception: false))
      when nil then return [data, true]
      when :wait_readable then ssl.to_io.wait_readable(left)
      when :wait_writable then ssl.to_io.wait_writable(left)
      else data << got
      end
    end
  rescue OpenSSL::SSL::SSLError, Errno::ECONNRESET, EOFError
    [data, false]
  end

  def tls_line(ssl)
    line = +""
    line << tls_read(ssl, bytes: 1).first until line.end_with?("\n")
    line
  end

  # A new connection asking `path` for an upgrade to "echo": the connection, the response's
  # head, and what came after it.
  def tls_upgrade(port, path)
    ssl = tls_connect(port)
    ssl.write("GET #{path} HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
    head = +""
    head << tls_read(ssl, bytes: 1).first until head.include?("\r\n\r\n")
    [ssl, *head.split("\r\n\r\n", 2)]
  end

  # Reads until the server's side ends: `size` bytes of /bulk's and /flood's pattern (checked
  # in order), then the rest. Returns how many of the pattern came and the rest.
  def read_pattern(ssl, size)
    back = Digest::SHA256.new
    received = 0
    tail = +""
    deadline = now + 120
    loop do
      data, = tls_read(ssl, bytes: 1, timeout: deadline - now)
      break if data.empty?

      keep = [size - received, data.bytesize].min
      back << data.byteslice(0, keep)
      tail << data.byteslice(keep..)
      received += keep
    end
    expected = Digest::SHA256.new
    (size / PIECE.bytesize).times { expected << PIECE }
    assert_equal expected.hexdigest, back.hexdigest, "the app's bytes arrive in order" if received == size
    [received, tail]
  end

  def https_get(port, path)
    ssl = tls_connect(port)
    ssl.write("GET #{path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    tls_read(ssl).first.split("\r\n\r\n", 2).last
  ensure
    ssl&.close
  end

  # The request and bytes behind it go in one TLS record: they reach the app first, then what
  # the client writes later; the app's close is a clean TLS end for the client (close_notify).
  # The app's IO is a UNIXSocket (one end of the relay's pair).
  def test_full_hijack_over_tls_echoes_early_bytes_first_and_the_app_closes_first
    _, port = tls_server("tls_hijack.ru")
    ssl = tls_connect(port)
    ssl.write("GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\nEARLY ")
    assert_equal "hello from UNIXSocket\n", tls_line(ssl)
    ssl.write("later quit")
    assert_equal ["EARLY later quit", true], tls_read(ssl)
    assert_equal "plain", https_get(port, "/")
  ensure
    ssl&.close
  end

  # The client's side ends first: a TCP half-close reaches the app as the end of its stream
  # while the app can still write back; a full close too (the end of the stream, after the
  # bytes sent before it; or, when the close reset the connection because the client left the
  # server's session tickets unread, the end without them, as a reset TCP connection loses
  # what it had not delivered).
  def test_the_client_ending_first_is_seen_by_the_app
    _, port = tls_server("tls_hijack.ru")
    ssl = tls_connect(port)
    ssl.write("GET /until-end HTTP/1.1\r\nHost: localhost\r\n\r\nabc")
    ssl.write("defg")
    ssl.to_io.shutdown(Socket::SHUT_WR)
    assert_equal ["read 7 bytes, then the end", true], tls_read(ssl)
    assert_equal "read 7", https_get(port, "/ended")

    ssl = tls_connect(port)
    ssl.write("GET /until-end HTTP/1.1\r\nHost: localhost\r\n\r\nxy")
    ssl.close
    assert_match(/\Aread [02]\z/, https_get(port, "/ended"))
  ensure
    ssl&.close
  end

  # 40 MiB to an app that does not read yet: the client is held up long before all of it is
  # taken (no buffer grows with what it sends); once the app reads, all of it arrives intact,
  # and 40 MiB come back.
  def test_megabytes_both_ways_with_backpressure
    size = 40 << 20
    _, port = tls_server("tls_hijack.ru")
    ssl = tls_connect(port)
    ssl.write("GET /bulk?#{size} HTTP/1.1\r\nHost: localhost\r\n\r\n")
    sent = Digest::SHA256.new
    chunk = (0...16).map { |i| PIECE.byteslice(i * 7, 4096) * 16 }.join.b # 1 MiB, not periodic at 64 KiB
    written = 0
    offset = 0
    while written < size
      n = ssl.write_nonblock(chunk.byteslice(offset, chunk.bytesize - offset), exception: false)
      if n.is_a?(Integer)
        sent << chunk.byteslice(offset, n)
        written += n
        offset = (offset + n) % chunk.bytesize
      elsif !ssl.to_io.wait_writable(2)
        break # held up: nothing is taken while the app does not read
      end
    end
    assert_operator written, :<, size, "the whole 40 MiB was taken while the app read nothing"
    assert_equal "released", https_get(port, "/release")
    while written < size
      piece = chunk.byteslice(offset, [chunk.bytesize - offset, size - written].min)
      ssl.write(piece)
      sent << piece
      written += piece.bytesize
      offset = (offset + piece.bytesize) % chunk.bytesize
    end
    received, tail = read_pattern(ssl, size)
    assert_equal size, received
    assert_equal sent.hexdigest, tail, "the app read what the client sent, in order"
  ensure
    ssl&.close
  end

  # The other way: a client that does not read holds up the app's writes (no buffer grows with
  # what the app writes); once it reads, all 40 MiB arrive in order.
  def test_a_client_that_does_not_read_holds_up_the_app
    size = 40 << 20
    _, port = tls_server("tls_hijack.ru")
    ssl = tls_connect(port)
    ssl.write("GET /flood?#{size} HTTP/1.1\r\nHost: localhost\r\n\r\n")
    held = https_get(port, "/held")
    assert_match(/\A\d+\z/, held, "the app wrote all 40 MiB to a client that read nothing")
    assert_operator Integer(held), :<, size
    received, tail = read_pattern(ssl, size)
    assert_equal [size, ""], [received, tail]
  ensure
    ssl&.close
  end

  # As a plain hijack: a relayed connection is not counted as open, its request not as a
  # response.
  def test_a_relayed_connection_is_counted_as_a_hijacked_one
    _, port = tls_server("tls_hijack.ru", "-t", "1:1")
    ssl = tls_connect(port)
    ssl.write("GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert_equal "hello from UNIXSocket\n", tls_line(ssl)
    stats = nil
    # The /stats request's own connection is the only one open (an earlier one's may linger).
    assert wait_until { (stats = JSON.parse(https_get(port, "/stats")))["connections_open"] == 1 },
           "the relayed connection still counted: #{stats}"
    # Every request but the hijacked one and this /stats (not answered yet) got a response.
    assert_equal stats["requests_count"] - 2, stats["responses"].values.sum
    ssl.write("quit")
    assert_equal ["quit", true], tls_read(ssl)
  ensure
    ssl&.close
  end

  # A 101 with a callable body (partial hijack, Rack 3): the head, then the callable's echo,
  # over TLS.
  def test_a_101_upgrade_over_tls
    _, port = tls_server("partial_hijack.ru")
    ssl, head, early = tls_upgrade(port, "/upgrade")
    assert_match %r{\AHTTP/1.1 101 Switching Protocols\r\n}, head
    assert_match(/^upgrade: echo\r?$/i, head)
    ssl.write("ping quit")
    data, clean = tls_read(ssl)
    assert_equal "ping quit", early + data
    assert clean, "a clean TLS end"
  ensure
    ssl&.close
  end

  def python(*args)
    assert File.executable?(PYTHON), "#{PYTHON} missing: script/bootstrap installs websockets there"
    [{ "SSL_CERT_FILE" => "#{@dir}/ca.pem" }, PYTHON, *args]
  end

  # A real WebSocket over wss:// (websocket-driver in the app, Python's `websockets` trusting
  # the test CA): messages echoed, a ping answered, closes either side.
  def test_websockets_over_wss
    _, port = tls_server("websocket.ru")
    url = "wss://localhost:#{port}/ws"
    client = File.join(__dir__, "support", "websocket_client.py")
    echo = JSON.parse(IO.popen(python(client, "echo", url), err: %i[child out], &:read).lines.last)
    assert $?.success?
    assert_equal "héllo", echo["text"]
    assert_equal [0, 1, 2, 255], echo["binary"]
    closes = JSON.parse(IO.popen(python(client, "close", url), err: %i[child out], &:read).lines.last)
    assert $?.success?
    assert_equal({ "code" => 4000, "reason" => "bye" }, closes["by_server"])
    assert_equal 1000, closes["by_client"]["rcvd"]
  end

  # Cluster mode: a phased restart keeps wss:// clients (relayed in the old workers) until each
  # old worker's drain time is over, then each is closed and logged by its worker.
  def test_a_phased_restart_keeps_wss_clients_until_the_drain_time_is_over
    n = 6
    config = File.join(@dir, "cluster.rb")
    File.write(config, "workers 2\npreload_app! false\ndrain_timeout 10\n")
    server, port = tls_server("websocket.ru", "-C", config)
    assert wait_until(timeout: 30) { server.stdout.scan(/Worker \d+ \(PID: \d+\) booted/).size >= 2 }, server.stdout
    client = File.join(__dir__, "support", "websocket_client.py")
    IO.popen(python(client, "hold", "wss://localhost:#{port}/ws", n.to_s), "r+", err: %i[child out]) do |io|
      command = lambda do |line|
        io.puts(line)
        io.flush
        JSON.parse(read_report(io))
      end
      assert_equal({ "ready" => n, "echoed" => n }, JSON.parse(read_report(io)))
      server.signal("USR1")
      2.times do |i|
        assert wait_until(timeout: 30) { server.stdout.scan(/Stopping \d+ for phased upgrade/).size > i }, server.stdout
        assert_equal({ "open" => n, "echoed" => n }, command.call("echo"), "none was dropped at stop #{i + 1}")
      end
      assert_equal({ "closed" => n, "codes" => [1006] * n }, command.call("closed"))
    end
    assert $?.success?
    closed = -> { server.stdout.scan(%r{^\[\d+\] - Drain time \(10 s\) over: closing the connection taken by GET /ws from 127\.0\.0\.1}) }
    assert wait_until { closed.call.size == n }, "one line per connection:\n#{server.stdout}"
  end

  # ActionCable (Rails 6.1) over wss://: subscribed, echoed, a broadcast reaches both
  # connections, clean closes.
  def test_actioncable_over_wss
    server, port = tls_server("cable/config.ru", "-t", "1:1")
    client = File.join(__dir__, "support", "actioncable_client.py")
    IO.popen(python(client, "wss://localhost:#{port}/cable", "http://127.0.0.1:#{port}"), "r+", err: %i[child out]) do |io|
      first = JSON.parse(read_report(io))
      assert_equal "confirm_subscription", first["subscribed"]["confirm"]
      assert_equal({ "echo" => { "text" => "héllo" } }, first["echoed"])
      assert_equal "plain", https_get(port, "/")
      io.puts("go")
      second = JSON.parse(read_report(io))
      assert_equal({ "broadcast" => "to all" }, second["to_b"])
      assert_equal [1000, 1000], second["closed"]
    end
    assert $?.success?
    refute_match(/error|exception|warn/i, server.stderr)
  end

  # drain.ru on a TLS bind with `drain_timeout seconds`, and its port.
  def drain_server(seconds)
    config = File.join(@dir, "drain.rb")
    File.write(config, "drain_timeout #{seconds}\n")
    tls_server("drain.ru", "-C", config)
  end

  # A connection drain.ru's /hijack took, its greeting read.
  def drain_hijacked(port)
    ssl = tls_connect(port)
    ssl.write("GET /hijack HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert_match(/\Ahello \d+\n\z/, tls_line(ssl))
    ssl
  end

  # TERM: a hijacked and an upgraded TLS connection keep working through the drain time, then
  # the server ends them (the client sees the end) and logs each as it logs plain ones (the
  # client's address is REMOTE_ADDR's, not the relay's).
  def test_term_drains_taken_tls_connections_then_closes_them
    server, port = drain_server(3)
    hijack = drain_hijacked(port)
    upgrade, head, greeting = tls_upgrade(port, "/upgrade")
    assert_match %r{\AHTTP/1.1 101 }, head
    greeting << tls_line(upgrade) unless greeting.end_with?("\n")
    assert_match(/\Ahello \d+\n\z/, greeting)

    server.signal("TERM")
    server.wait_for(/Waiting up to 3 s \(drain_timeout\) for 2 connections taken by the app/)
    wait_until_refused(port)
    hijack.write("still there\n")
    assert_equal "still there\n", tls_line(hijack), "the hijacked connection was dropped at the stop"
    upgrade.write("still here\n")
    assert_equal "still here\n", tls_line(upgrade), "the upgraded connection was dropped at the stop"

    assert_equal "", tls_read(hijack, timeout: 30).first
    assert_equal "", tls_read(upgrade, timeout: 30).first
    assert_equal Signal.list["TERM"], server.wait_exit(timeout: 30).termsig
    log = server.stdout
    assert_match %r{^- Drain time \(3 s\) over: closing the connection taken by GET /hijack from 127\.0\.0\.1, open [\d.]+ s$}, log
    assert_match %r{^- Drain time \(3 s\) over: closing the connection taken by GET /upgrade from 127\.0\.0\.1, open [\d.]+ s$}, log
    assert_equal "", server.stderr
  ensure
    [hijack, upgrade].each { |s| s&.close }
  end

  # A hot restart does not drain: the relayed connection is closed at once (logged as a plain
  # one), the relay does not hold up the exec, and the new process serves HTTPS.
  def test_a_hot_restart_closes_a_relayed_connection_at_once
    server, port = drain_server(120)
    hijack = drain_hijacked(port)
    first = https_get(port, "/")
    server.signal("USR2")
    assert_equal "", tls_read(hijack, timeout: 30).first
    server.wait_for(%r{^- Restarting \(no drain\): closing the connection taken by GET /hijack from 127\.0\.0\.1, open [\d.]+ s$})
    server.wait_for(/\(inherited\)/, timeout: 30)
    assert_equal first, https_get(port, "/"), "the same pid after exec"
  ensure
    hijack&.close
  end
end
