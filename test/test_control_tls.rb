# frozen_string_literal: true

require_relative "support/helper"
require_relative "support/certificates"

# The control server on an `ssl://` URL (Puma's `activate_control_app "ssl://..."`): answered
# over TLS with the URL's certificate, the token checked as over TCP, plain HTTP or a silent
# client on the TLS port answered by nothing and holding up nobody, and a certificate, key or
# parameter that cannot be used stopping the boot with one line naming the URL. catamountctl
# and pumactl over ssl:// are in test_ctl.rb.
class TestControlTls < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  # One request over a new TLS connection to `port`, the server verified against `ca`/ca.pem
  # (nil: not verified); returns [status, body] once the server has closed (close_notify).
  def tls_control(port, path, ca: nil)
    ctx = OpenSSL::SSL::SSLContext.new
    ctx.ca_file = "#{ca}/ca.pem" if ca
    ctx.verify_mode = ca ? OpenSSL::SSL::VERIFY_PEER : OpenSSL::SSL::VERIFY_NONE
    sock = Socket.tcp("127.0.0.1", port, connect_timeout: 10)
    ssl = OpenSSL::SSL::SSLSocket.new(sock, ctx)
    ssl.sync_close = true
    text = Timeout.timeout(20) do
      ssl.connect
      ssl.write("GET #{path} HTTP/1.0\r\n\r\n")
      ssl.read
    end
    head, body = text.split("\r\n\r\n", 2)
    [head[/\AHTTP\/1\.\d (\d+)/, 1].to_i, body]
  ensure
    ssl ? ssl.close : sock&.close
  end

  def control_port(server)
    server.stdout[%r{Starting control server on ssl://127\.0\.0\.1:(\d+)}, 1]&.to_i
  end

  def test_stats_and_the_token_over_tls_while_plain_http_and_silent_clients_get_nothing
    dir = certificates(Dir.mktmpdir)
    url = "ssl://127.0.0.1:0?key=#{dir}/key.pem&cert=#{dir}/cert.pem"
    server = start_server("-t", "2:2", "--control-url", url, "--control-token", "T", "-S", "#{dir}/state")
    port = control_port(server)
    assert port, server.stdout
    assert_includes File.read("#{dir}/state"), "control_url: ssl://127.0.0.1:#{port}\n"

    status, body = tls_control(port, "/stats?token=T", ca: dir)
    assert_equal 200, status
    assert_equal 2, JSON.parse(body)["max_threads"]
    assert_equal [403, "Invalid auth token"], tls_control(port, "/stats?token=t", ca: dir)
    assert_equal [404, "Unsupported action"], tls_control(port, "/nothing?token=T", ca: dir)

    # A client that connects and says nothing (no handshake), and one that sends plain HTTP.
    silent = Socket.tcp("127.0.0.1", port, connect_timeout: 10)
    plain = Socket.tcp("127.0.0.1", port, connect_timeout: 10)
    plain.write("GET /stats?token=T HTTP/1.0\r\n\r\n")
    answer = read_until_close(plain, timeout: 20)
    refute_match(/HTTP|max_threads/, answer, "no HTTP answer on the TLS port")
    assert answer.empty? || answer.start_with?("\x15".b), "a TLS alert at most: #{answer.inspect}"
    # Others are served meanwhile, over TLS, and the app's port too.
    assert_equal 200, tls_control(port, "/gc-stats?token=T", ca: dir).first
    assert_equal 200, get(server.port, "/").status
    assert_equal 200, tls_control(port, "/stop?token=T", ca: dir).first
    assert_equal 0, server.wait_exit.exitstatus
  ensure
    silent&.close
    plain&.close
    FileUtils.rm_rf(dir) if dir
  end

  def test_a_cluster_master_answers_over_tls
    dir = certificates(Dir.mktmpdir)
    File.write("#{dir}/puma.rb", <<~RUBY)
      activate_control_app "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem", auth_token: "s3cret"
    RUBY
    server = start_server("-w", "2", "-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0")
    port = control_port(server)
    stats = nil
    assert wait_until(timeout: 30) {
      stats = JSON.parse(tls_control(port, "/stats?token=s3cret", ca: dir).last)
      stats["booted_workers"] == 2
    }, stats.inspect
    assert_equal 2, stats["worker_status"].size
    assert_equal 403, tls_control(port, "/stats", ca: dir).first
  ensure
    kill_named_workers(server)
    FileUtils.rm_rf(dir) if dir
  end

  # Refused at boot, before anything listens: one line on stderr naming the control URL.
  def assert_refused(url, reason, env: {}, args: [])
    server = start_server(*args, "--control-url", url, boot: false, env: env)
    assert_equal 1, server.wait_exit.exitstatus
    assert_equal 1, server.stderr.lines.size, server.stderr
    assert_includes server.stderr, "Control server address '#{url}' "
    assert_match reason, server.stderr
  end

  def test_a_bad_key_cert_or_parameter_stops_the_boot_with_one_line_naming_the_url
    dir = certificates(Dir.mktmpdir)
    other = certificates(Dir.mktmpdir)
    assert_refused "ssl://127.0.0.1:0?key=#{dir}/cert.pem&cert=#{dir}/cert.pem", /cannot serve TLS: .*no private key/
    assert_refused "ssl://127.0.0.1:0?key=#{other}/key.pem&cert=#{dir}/cert.pem",
                   /cannot serve TLS: the key does not match the certificate/
    assert_refused "ssl://127.0.0.1:0?key=#{dir}/key.pem&cert=#{dir}/missing.pem", /cannot serve TLS: .*missing\.pem/
    assert_refused "ssl://127.0.0.1:0?key=#{dir}/key.pem&cert=#{dir}/cert.pem&verify_mode=sometimes", /is invalid: .*verify_mode/
    # No cert and key: the development certificate only in development and test.
    assert_refused "ssl://127.0.0.1:0", /needs cert and key/, args: ["-e", "production"]
  ensure
    [dir, other].compact.each { |d| FileUtils.rm_rf(d) }
  end

  def test_the_development_certificate_without_cert_and_key_in_development
    Dir.mktmpdir do |dir|
      server = start_server("-e", "development", "--control-url", "ssl://127.0.0.1:0", "--control-token", "none",
                            env: { "XDG_CACHE_HOME" => "#{dir}/cache" })
      assert_match(%r{^\* ssl://127\.0\.0\.1:\d+: Using the self-signed development certificate #{Regexp.escape(dir)}/cache/catamount/\S+}, server.stdout)
      assert_equal 200, tls_control(control_port(server), "/stats").first
    end
  end
end
