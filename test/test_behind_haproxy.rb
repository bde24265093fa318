# frozen_string_literal: true

require "helper"
require "haproxy"
require "under_load"
require "certificates"

# Behind Debian's HAProxy: REMOTE_ADDR is the client's, whether HAProxy says so with a PROXY v1
# line (`send-proxy`), a v2 header (`send-proxy-v2`, over TCP and over a UNIX socket) or an
# X-Forwarded-For header (`option forwardfor`); its health checks (`option httpchk`, LOCAL
# headers under v2) pass without a word in Catamount's log; its upstream connections are kept
# alive; and restarts (phased and hot) under load through it cost no request and no 5xx. A PROXY
# v2 header sent by hand checks the refusals HAProxy never sends.
class TestBehindHaproxy < Minitest::Test
  include Support::ServerTest
  include Support::Haproxy
  include Support::UnderLoad
  include Support::Certificates
  parallelize_me!

  # A request HAProxy sends on an idle keep-alive connection just as the server closes it gets
  # no answer (HTTP/1.1's known race, RFC 9112 §9.6; a stopping Catamount avoids it for
  # connections in use, but a host can still die or time a connection out). HAProxy retries such
  # a request itself on a new connection when told to, as a deployment behind it should
  # (docs/deployment.md); without it HAProxy closes the client's connection, counts a response
  # error, and leaves the retry to the client.
  RETRY_ON = "retry-on conn-failure empty-response"

  def test_proxy_v1_names_the_client
    behind_haproxy("set_remote_address proxy_protocol: :v1", "send-proxy") do |port, server|
      assert_clients_seen(port)
      refute_match(/Closing a connection/, server.stderr)
    end
  end

  def test_proxy_v2_names_the_client_and_health_checks_pass_as_local
    behind_haproxy("set_remote_address proxy_protocol: :v2", "send-proxy-v2") do |port, server|
      assert_clients_seen(port)
      # Checks every 100 ms passed all along, each a LOCAL header Catamount took without
      # dropping the connection (one dropped check would count as failed).
      checks = haproxy_server_stats(port)
      assert_equal ["UP", "L7OK", "0"], checks.values_at("status", "check_status", "chkfail"), checks.inspect
      refute_match(/Closing a connection|malformed/, server.stderr)
    end
  end

  def test_proxy_v2_keeps_the_upstream_connection_alive
    behind_haproxy("set_remote_address proxy_protocol: :v2", "send-proxy-v2") do |port, _server|
      before = haproxy_server_stats(port)["reuse"].to_i
      sock = connect(port)
      3.times do |i|
        sock.write("GET /env HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_response(sock)
        assert_equal 200, response.status, "request #{i}"
        assert_equal "127.0.0.1", JSON.parse(response.body)["REMOTE_ADDR"]
      end
      # Each request after the first went over the upstream connection the first opened.
      assert_operator haproxy_server_stats(port)["reuse"].to_i - before, :>=, 2
    ensure
      sock&.close
    end
  end

  def test_proxy_v2_over_a_unix_socket_upstream
    behind_haproxy("set_remote_address proxy_protocol: :v2", "send-proxy-v2", unix: true) do |port, server|
      assert_clients_seen(port)
      refute_match(/Closing a connection/, server.stderr)
    end
  end

  # Catamount takes the header's first address, as Puma does, so HAProxy must drop the one a
  # client sends before adding its own (docs/deployment.md).
  def test_x_forwarded_for_behind_option_forwardfor
    backend = ["http-request del-header X-Forwarded-For", "option forwardfor"]
    behind_haproxy("set_remote_address header: \"X-Forwarded-For\"", "", backend: backend) do |port, _|
      assert_clients_seen(port)
      spoofed = raw_request(port, "GET /env HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n")
      assert_equal "127.0.0.1", JSON.parse(spoofed.body)["REMOTE_ADDR"], "the client's own header is dropped"
    end
  end

  # TLS passed through HAProxy in TCP mode to a TLS listener: the v2 header comes first, in
  # the clear, then the client's handshake.
  def test_proxy_v2_before_tls_passed_through
    Dir.mktmpdir do |dir|
      certificates(dir)
      server, upstream = start_tls_server(dir, "set_remote_address proxy_protocol: :v2\n")
      port = start_haproxy(dir, upstream, server_options: "send-proxy-v2", mode: "tcp")
      assert_equal "127.0.0.2", remote_over(Socket.tcp("127.0.0.1", port, "127.0.0.2", 0, connect_timeout: 5), dir)
      assert_equal "::1", remote_over(Socket.tcp("::1", port, connect_timeout: 5), dir) if Support::Haproxy.ipv6?
      refute_match(/Closing a connection/, server.stderr)
    end
  end

  # HAProxy never sends these, so they are sent by hand: the wrong version, a UDP family, a
  # header cut short and left there. Each is dropped without an answer and logged once; a
  # good header still works after them.
  def test_a_bad_v2_header_drops_the_connection_and_is_logged
    Dir.mktmpdir do |dir|
      File.write("#{dir}/puma.rb", "set_remote_address proxy_protocol: :v2\nfirst_data_timeout 1\n")
      server = start_server("-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0")
      request = "GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      {
        "PROXY TCP4 198.51.100.7 10.0.0.1 40000 80\r\n" => /version 1 line where version 2 is expected/,
        v2_header(0x21, 0x12, [198, 51, 100, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 80]) => /datagram/,
        v2_header(0x11, 0x11, [198, 51, 100, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 80]) => /version is not 2/
      }.each do |header, logged|
        bad = connect(server.port)
        bad.write(header + request)
        assert_equal "", read_until_close(bad), "#{header.inspect} is dropped without an answer"
        server.wait_for(/Closing a connection from 127\.0\.0\.1: malformed PROXY protocol line: .*#{logged.source}/, stream: :stderr)
        bad.close
      end
      # Cut short: closed at first_data_timeout, without an answer.
      cut = connect(server.port)
      cut.write(v2_header(0x21, 0x11, [198, 51, 100, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 80])[0, 20])
      assert_equal "", read_until_close(cut, timeout: 15), "a truncated header is dropped at the deadline"
      cut.close
      good = connect(server.port)
      good.write(v2_header(0x21, 0x11, [198, 51, 100, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 80]) + request)
      assert_equal "198.51.100.7", JSON.parse(read_response(good).body)["REMOTE_ADDR"]
      good.close
      # TLVs after the addresses are skipped; a LOCAL header keeps the socket's address.
      tlv = v2_header(0x21, 0x11, [198, 51, 100, 8, 10, 0, 0, 1, 0x9c, 0x40, 0, 80, 0x01, 0, 2, *"h2".bytes])
      assert_equal "198.51.100.8", JSON.parse(raw_request(server.port, tlv + request).body)["REMOTE_ADDR"]
      assert_equal "127.0.0.1", JSON.parse(raw_request(server.port, v2_header(0x20, 0, []) + request).body)["REMOTE_ADDR"]
    end
  end

  # 2,000 requests from keep-alive clients through HAProxy (PROXY v2 to a two-worker cluster)
  # across a phased restart (USR1) and a hot restart (USR2): every answer a 200, and HAProxy
  # counted no 5xx, no connection error, and no response error.
  def test_restarts_behind_haproxy_lose_nothing
    serve("-w", "2", config: "set_remote_address proxy_protocol: :v2\n") do |server, dir|
      server.wait_for(/Worker 0 \(PID: \d+\) booted.*Worker 1 \(PID: \d+\) booted|Worker 1 \(PID: \d+\) booted.*Worker 0 \(PID: \d+\) booted/m)
      port = start_haproxy(dir, server.port, server_options: "send-proxy-v2", backend: [RETRY_ON])
      wait_for_haproxy_up(port)
      load = SteadyLoad.new(port, keep_alive: 4, fresh: 0, max_seconds: 150)
      phased_then_hot_restart(server, dir, load)
      stats = haproxy_server_stats(port)
      counts = %w[hrsp_2xx hrsp_5xx econ eresp wretr wredis].to_h { |k| [k, stats[k].to_i] }
      puts "\nthrough HAProxy across USR1 and USR2: #{load.ok + load.failures.size} sent, #{load.ok} answered, " \
           "#{load.failures.size} failed; HAProxy #{counts.map { |k, v| "#{k} #{v}" }.join(', ')}"
      assert_operator load.ok, :>=, 2000
      problems = haproxy_log_problems(dir)
      assert_empty problems, "HAProxy's log:\n#{problems.join}\n#{load.summary}"
      assert_empty load.failures, load.summary
      assert_equal 0, counts["hrsp_5xx"], stats.inspect
      assert_equal 0, counts["econ"], stats.inspect
      # A stopping worker keeps a keep-alive connection used a moment ago open for HAProxy's next
      # request (reactor/conn.rs `last_call`), so none meets a close: no response error at all.
      assert_equal 0, counts["eresp"], stats.inspect
      assert_equal "UP", stats["status"]
    end
  end

  private

  # Catamount (kitchen.ru) with `config`, on 127.0.0.1 or (`unix`) a UNIX socket, HAProxy in
  # front with `server_options` and `backend` lines, once its health check sees the server up.
  def behind_haproxy(config, server_options, unix: false, backend: [])
    Dir.mktmpdir do |dir|
      File.write("#{dir}/puma.rb", "#{config}\n")
      sock = "#{dir}/catamount.sock"
      server = start_server("-C", "#{dir}/puma.rb", "-b", unix ? "unix://#{sock}" : "tcp://127.0.0.1:0")
      port = start_haproxy(dir, unix ? sock : server.port, server_options: server_options, backend: backend)
      wait_for_haproxy_up(port)
      yield port, server
    end
  end

  # REMOTE_ADDR is each client's address: 127.0.0.1, 127.0.0.2 (not HAProxy's own 127.0.0.1
  # towards Catamount: so the answer cannot come from the socket) and ::1 where there is one.
  def assert_clients_seen(port)
    assert_equal "127.0.0.1", remote_addr_via(port)
    assert_equal "127.0.0.2", remote_addr_via(port, local: "127.0.0.2")
    assert_equal "::1", remote_addr_via(port, host: "::1") if Support::Haproxy.ipv6?
  end

  def remote_addr_via(port, host: "127.0.0.1", local: nil)
    sock = local ? Socket.tcp(host, port, local, 0, connect_timeout: 5) : connect(port, host: host)
    sock.write("GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = read_response(sock)
    assert_equal 200, response.status, response.body
    JSON.parse(response.body)["REMOTE_ADDR"]
  ensure
    sock&.close
  end

  def v2_header(ver_cmd, family, body)
    "\r\n\r\n\0\r\nQUIT\n".b + [ver_cmd, family, body.size].pack("CCn") + body.pack("C*")
  end
end
