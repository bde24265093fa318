# frozen_string_literal: true

require "helper"
require "nginx"
require "smuggling_table"
require "under_load"
require "certificates"

# Behind Debian's nginx, proxying with upstream keep-alive (`keepalive`, HTTP/1.1, no
# Connection header passed on): its upstream connections, over TCP and over a UNIX socket, are
# reused; X-Forwarded-For/X-Real-IP/X-Forwarded-Proto give REMOTE_ADDR and rack.url_scheme;
# its stream module's PROXY v1 line names the client; restarts (phased and hot) under load
# through it cost no request and leave nothing in nginx's logs. And no smuggling vector
# desynchronises the connection between nginx and Catamount: each row of
# test/support/smuggling_table.rb goes to nginx with a request pipelined behind it, then a
# normal request follows on a new client connection, which nginx sends over its kept upstream
# connection. The follow-up must get its own answer, and the app (counting.ru) must never see a
# request the client did not send as one.
class TestBehindNginx < Minitest::Test
  include Support::ServerTest
  include Support::Nginx
  include Support::UnderLoad
  include Support::Certificates
  include Smuggling::Check
  parallelize_me!

  # Requests sent one after another, each on a new client connection to nginx: nginx sends them
  # all over the one upstream connection it keeps, so Catamount accepts far fewer connections.
  def test_upstream_connections_are_kept_alive_over_tcp_and_a_unix_socket
    Dir.mktmpdir do |dir|
      sock = "#{dir}/catamount.sock"
      server = start_server("-b", "tcp://127.0.0.1:0", "-b", "unix://#{sock}", app: "stats.ru")
      { "tcp" => server.port, "unix" => sock }.each do |name, upstream|
        FileUtils.mkdir_p("#{dir}/#{name}")
        port = start_nginx("#{dir}/#{name}", upstream, keepalive: 16)
        before = accepted(port)
        20.times { |i| assert_equal 200, get(port, "/stats").status, "#{name} request #{i}" }
        opened = accepted(port) - before
        puts "\n20 requests through nginx to Catamount over #{name}: #{opened} new upstream connections"
        assert_operator opened, :<=, 2, "nginx hardly reused its upstream connections over #{name}"
        assert_empty nginx_upstream_problems("#{dir}/#{name}")
      end
    end
  end

  # nginx sets X-Forwarded-For and X-Real-IP to the client's address (replacing one the client
  # sent) and X-Forwarded-Proto to its own scheme; with `set_remote_address header:` REMOTE_ADDR
  # is the client's (127.0.0.2, not nginx's 127.0.0.1), and rack.url_scheme follows the proto.
  # Over a UNIX socket REMOTE_ADDR is 127.0.0.1 whatever the header says, as in Puma (its UNIX
  # listeners preset it): the app still has the headers (Rails' remote_ip reads them).
  def test_forwarded_headers_name_the_client_and_the_scheme
    Dir.mktmpdir do |dir|
      certificates(dir)
      File.write("#{dir}/puma.rb", "set_remote_address header: \"X-Forwarded-For\"\n")
      sock = "#{dir}/catamount.sock"
      server = start_server("-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", "-b", "unix://#{sock}")
      fronts = { "http" => [server.port, false], "https" => [server.port, true], "unix" => [sock, false] }.to_h do |name, (upstream, tls)|
        FileUtils.mkdir_p("#{dir}/#{name}")
        FileUtils.cp(%w[cert.pem key.pem].map { |f| "#{dir}/#{f}" }, "#{dir}/#{name}") if tls
        [name, start_nginx("#{dir}/#{name}", upstream, keepalive: 16, location: FORWARDED, tls: tls)]
      end
      keys = ["REMOTE_ADDR", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_PROTO", "rack.url_scheme"]
      env = env_via(fronts["http"], { "X-Forwarded-For" => "203.0.113.9" })
      assert_equal ["127.0.0.2", "127.0.0.2", "127.0.0.2", "http", "http"], env.values_at(*keys),
                   "the client's own X-Forwarded-For is replaced: #{env.inspect}"
      assert_equal "127.0.0.1", env_via(fronts["http"], local: nil)["REMOTE_ADDR"]
      env = env_via(fronts["https"], ca: "#{dir}/ca.pem")
      assert_equal ["127.0.0.2", "127.0.0.2", "127.0.0.2", "https", "https"], env.values_at(*keys), env.inspect
      assert_equal "localhost", env["SERVER_NAME"]
      env = env_via(fronts["unix"])
      assert_equal ["127.0.0.1", "127.0.0.2", "127.0.0.2", "http", "http"], env.values_at(*keys), env.inspect
      assert_empty fronts.keys.flat_map { |name| nginx_upstream_problems("#{dir}/#{name}") }
    end
  end

  # nginx's stream module relays TCP and, with `proxy_protocol on`, sends a PROXY v1 line first
  # on each upstream connection (it sends no v2: test_behind_haproxy.rb covers that).
  def test_proxy_v1_from_the_stream_module_names_the_client
    skip "nginx's stream module is missing (#{STREAM_MODULE}): install libnginx-mod-stream" unless File.exist?(STREAM_MODULE)

    Dir.mktmpdir do |dir|
      File.write("#{dir}/puma.rb", "set_remote_address proxy_protocol: :v1\n")
      sock = "#{dir}/catamount.sock"
      server = start_server("-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", "-b", "unix://#{sock}")
      { "tcp" => server.port, "unix" => sock }.each do |name, upstream|
        FileUtils.mkdir_p("#{dir}/#{name}")
        port = start_nginx("#{dir}/#{name}", upstream, stream: true)
        assert_equal "127.0.0.2", env_via(port)["REMOTE_ADDR"], name
        assert_equal "127.0.0.1", env_via(port, local: nil)["REMOTE_ADDR"], name
      end
      refute_match(/Closing a connection/, server.stderr)
    end
  end

  # 2,000 requests from keep-alive clients through nginx (upstream keep-alive over a UNIX
  # socket to a two-worker cluster) across a phased restart (USR1) and a hot restart (USR2):
  # every answer a 200; nginx's access log has only 200s from the upstream (a request it had to
  # retry would show two upstream statuses) and its error log no upstream error.
  def test_restarts_behind_nginx_lose_nothing
    serve("-w", "2", "-b", "unix://DIR/catamount.sock") do |server, dir|
      server.wait_for(/Worker 0 \(PID: \d+\) booted.*Worker 1 \(PID: \d+\) booted|Worker 1 \(PID: \d+\) booted.*Worker 0 \(PID: \d+\) booted/m)
      FileUtils.mkdir_p("#{dir}/nginx")
      port = start_nginx("#{dir}/nginx", "#{dir}/catamount.sock", keepalive: 16, location: FORWARDED)
      load = SteadyLoad.new(port, keep_alive: 4, fresh: 0, max_seconds: 150)
      phased_then_hot_restart(server, dir, load)
      problems = nginx_upstream_problems("#{dir}/nginx")
      puts "\nthrough nginx across USR1 and USR2: #{load.ok + load.failures.size} sent, #{load.ok} answered, " \
           "#{load.failures.size} failed; nginx logged #{problems.size} upstream problems"
      assert_operator load.ok, :>=, 2000
      assert_empty load.failures, load.summary
      assert_empty problems, "nginx's logs:\n#{problems.first(20).join}"
      logged = File.read("#{dir}/nginx/access.log").lines
      assert_operator logged.grep(%r{ unix:#{Regexp.escape(dir)}/catamount\.sock$}).size, :>=, 2000, logged.last(3).join
    end
  end

  def test_no_vector_desynchronises_an_upstream_keep_alive_connection
    Dir.mktmpdir do |dir|
      server = start_server(app: "counting.ru")
      port = start_nginx(dir, server.port)
      desyncs = []
      statuses = Hash.new(0)
      upstream = []
      Smuggling::ROWS.each_with_index do |(what, raw), i|
        statuses[send_vector(port, raw)] += 1
        follow = "/follow/#{i}"
        response = begin
          get(port, follow)
        rescue RuntimeError => e
          e.message
        end
        upstream |= upstream_connections(server.port)
        problem = desync(raw, follow, response, calls_since_last_check(server.port))
        desyncs << "#{what}: #{problem}" if problem
      end
      puts "\n#{Smuggling::ROWS.size} vectors tried behind nginx, #{desyncs.size} desyncs found; nginx answered " \
           "#{statuses.sort.map { |s, n| "#{s}: #{n}" }.join(', ')}; #{upstream.size} upstream connections seen"
      assert_empty desyncs, desyncs.join("\n")
      assert_operator upstream.size, :<, Smuggling::ROWS.size / 2, "nginx hardly reused its upstream connections"
    end
  end

  private

  # Catamount's connections_accepted (stats.ru's /stats) asked through nginx.
  def accepted(port)
    JSON.parse(get(port, "/stats").body)["catamount"]["connections_accepted"]
  end

  # kitchen.ru's /env asked through nginx at `port` by a client on `local` (HTTPS verified
  # with `ca` when given), with extra request `headers`.
  def env_via(port, headers = {}, local: "127.0.0.2", ca: nil)
    http = Net::HTTP.new(ca ? "localhost" : "127.0.0.1", port)
    http.ipaddr = "127.0.0.1" if ca
    http.local_host = local
    http.open_timeout = http.read_timeout = 10
    http.max_retries = 0
    if ca
      http.use_ssl = true
      http.ca_file = ca
    end
    response = http.start { |h| h.get("/env", headers) }
    assert_equal "200", response.code, response.body
    JSON.parse(response.body)
  end

  # Sends the row and a pipelined request behind it; returns the status nginx answered first
  # (or what happened instead). Reads until nginx closes or has answered both requests: a
  # connection it keeps open with fewer answers is closed after a few seconds.
  def send_vector(port, raw)
    sock = connect(port)
    answer = send_row(sock, raw + Smuggling::PIPELINED, false)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
    until complete_answers(answer) >= 2
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      break if left <= 0 || !sock.wait_readable(left)

      answer << sock.readpartial(65_536)
    end
    first_status(answer)
  rescue EOFError, Errno::ECONNRESET
    first_status(answer)
  ensure
    sock&.close
  end

  def first_status(answer)
    answer[%r{\AHTTP/1\.[01] (\d{3})}, 1] || (answer.empty? ? "nothing" : "not HTTP")
  end

  # How many whole responses `data` holds (nginx frames its answers with content-length).
  def complete_answers(data)
    count = 0
    rest = data
    while (head_end = rest.index("\r\n\r\n"))
      length = rest[0, head_end][/^content-length: *(\d+)\r?$/i, 1].to_i
      break if rest.bytesize < head_end + 4 + length

      count += 1
      rest = rest.byteslice(head_end + 4 + length..)
    end
    count
  end

  # Nil when the follow-up got its own answer and the app saw only requests the client sent:
  # the row's own (at most one, with the row's method, never the request hidden in its body),
  # the pipelined one (at most once) and the follow-up (once).
  def desync(raw, follow, response, seen)
    problems = []
    unless response.is_a?(HttpClient::Response) && response.status == 200 && response.body == "seen #{follow}"
      problems << "the follow-up got #{response.is_a?(HttpClient::Response) ? [response.status, response.body] : response}"
    end
    follows, others = seen.partition { |c| c == "GET #{follow} 0" }
    pipelined, own = others.partition { |c| c.start_with?("GET #{Smuggling::PIPELINED[/ (\S+) /, 1]} ") }
    method = raw[/\A\S+/]
    problems << "the follow-up reached the app #{follows.size} times" unless follows.size == 1
    if pipelined.size > 1 || own.size > 1 || own.any? { |c| !c.start_with?("#{method} ") || c.include?("hidden") }
      problems << "the app saw #{seen.inspect}"
    end
    problems.join(", ") unless problems.empty?
  end

  # The local ports of nginx's connections to `port` (kept ones stay established between
  # requests): fewer than the requests sent shows the connections were reused.
  def upstream_connections(port)
    IO.popen(["ss", "-Htn", "state", "established", "dport = :#{port}"], &:read)
      .scan(/127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:#{port}\b/).flatten
  end
end
