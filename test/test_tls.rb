# frozen_string_literal: true

require "helper"
require "certificates"
require "open3"

# TLS listeners (`ssl://` binds, `ssl_bind`) with real clients: curl and Ruby's Net::HTTP over
# a certificate made here by a CA made here; plain HTTP to the TLS port; a bad certificate
# stops the boot naming the bind; the development certificate. App: tls.ru.
class TestTls < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  def tls_server(dir, *more, env: {})
    server = start_server("-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem", *more,
                          app: "tls.ru", env: env)
    [server, server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i]
  end

  def curl(port, dir, *args, ok: true, path: "/")
    out, err, status = Open3.capture3("curl", "-sS", "--max-time", "20", "--cacert", "#{dir}/ca.pem",
                                      "--resolve", "localhost:#{port}:127.0.0.1", *args,
                                      "https://localhost:#{port}#{path}")
    assert_equal ok, status.success?, err
    out
  end

  # A chunked request body, a streamed (chunked) response, 103 Early Hints, a `to_path` file,
  # all over TLS; and openssl s_client speaks to it.
  def test_chunked_bodies_streams_hints_and_files_over_tls
    Dir.mktmpdir do |dir|
      certificates(dir)
      _, port = tls_server(dir, "--early-hints")
      File.write("#{dir}/body", "c" * 50_000)
      assert_equal 50_000, JSON.parse(curl(port, dir, "-H", "Transfer-Encoding: chunked",
                                           "--data-binary", "@#{dir}/body"))["body"]
      events = curl(port, dir, "-i", path: "/events")
      assert_match(/transfer-encoding: chunked/i, events)
      assert events.end_with?("data: 0\n\ndata: 1\n\ndata: 2\n\n"), events
      hints = curl(port, dir, "-i", path: "/hints")
      assert_match(%r{\AHTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK}, hints)
      assert hints.end_with?("after hints"), hints
      assert_equal File.read(File.join(Support::APPS, "tls.ru")), curl(port, dir, path: "/file")

      out, err, status = Open3.capture3("openssl", "s_client", "-connect", "127.0.0.1:#{port}",
                                        "-servername", "localhost", "-CAfile", "#{dir}/ca.pem",
                                        "-verify_return_error", "-quiet",
                                        stdin_data: "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
      assert status.success?, err
      assert_match(/\AHTTP\/1.1 200 OK\r\n.*"scheme":"https"/m, out)
    end
  end

  # Five hundred connections that never finish a handshake (half-open: connected, silent) hold
  # up no one: clients are served meanwhile.
  def test_five_hundred_silent_handshakes_hold_up_no_one
    Dir.mktmpdir do |dir|
      certificates(dir)
      _, port = tls_server(dir)
      silent = Array.new(500) { Socket.tcp("127.0.0.1", port, connect_timeout: 10) }
      3.times { assert_equal "https", JSON.parse(curl(port, dir))["scheme"] }
      silent.first(250).each { |s| s.write("\x16\x03\x01\x00\x05junk") } # garbage hellos
      assert_equal "https", JSON.parse(curl(port, dir))["scheme"]
    ensure
      silent&.each(&:close)
    end
  end

  # `verify_mode force_peer`: a client certificate the CA signed is required, and reaches the
  # app as Puma gives it (an OpenSSL::X509::Certificate in `puma.peercert`); `peer`: asked for,
  # optional.
  def test_client_certificates
    Dir.mktmpdir do |dir|
      certificates(dir)
      stranger = certificates(Dir.mktmpdir(nil, dir))
      client = ["--cert", "#{dir}/client.pem", "--key", "#{dir}/client-key.pem"]
      server, port = tls_server(dir, "-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem&verify_mode=force_peer&ca=#{dir}/ca.pem")
      force = server.stdout.scan(%r{Listening on ssl://127\.0\.0\.1:(\d+)}).flatten.map(&:to_i).last
      assert_equal "/CN=a client", JSON.parse(curl(force, dir, *client))["peercert"]
      curl(force, dir, ok: false)
      curl(force, dir, "--cert", "#{stranger}/client.pem", "--key", "#{stranger}/client-key.pem", ok: false)
      refute JSON.parse(curl(port, dir, *client)).key?("peercert"), "none asked for on the first listener"

      peer, = tls_server(dir, "-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem&verify_mode=peer&ca=#{dir}/ca.pem")
      optional = peer.stdout.scan(%r{Listening on ssl://127\.0\.0\.1:(\d+)}).flatten.map(&:to_i).last
      assert_equal "/CN=a client", JSON.parse(curl(optional, dir, *client))["peercert"]
      refute JSON.parse(curl(optional, dir)).key?("peercert")
    end
  end

  def test_curl_and_net_http_over_tls_with_keep_alive_and_bodies
    Dir.mktmpdir do |dir|
      certificates(dir)
      server, port = tls_server(dir)
      facts = JSON.parse(curl(port, dir))
      assert_equal({ "scheme" => "https", "https" => "https", "port" => port.to_s, "method" => "GET",
                     "body" => 0, "hijack" => true }, facts)
      File.write("#{dir}/body", "x" * 300_000)
      assert_equal 300_000, JSON.parse(curl(port, dir, "--data-binary", "@#{dir}/body"))["body"]

      http = Net::HTTP.new("localhost", port)
      http.ipaddr = "127.0.0.1"
      http.use_ssl = true
      http.ca_file = "#{dir}/ca.pem"
      http.verify_mode = OpenSSL::SSL::VERIFY_PEER
      http.open_timeout = http.read_timeout = 20
      http.start do |h|
        3.times { assert_equal "https", JSON.parse(h.get("/").body)["scheme"] }
        assert_equal 1_000_000, JSON.parse(h.post("/", "y" * 1_000_000, "content-type" => "text/plain").body)["body"]
      end
      assert_equal "", server.stderr
    end
  end

  # Plain HTTP sent to the TLS port gets no HTTP answer (the handshake fails: the connection
  # ends), nothing is logged, and TLS clients are served meanwhile. With `--debug`, one debug
  # line says so.
  def test_plain_http_to_the_tls_port_is_closed
    Dir.mktmpdir do |dir|
      certificates(dir)
      server, port = tls_server(dir)
      debug, debug_port = tls_server(dir, "--debug")
      [port, debug_port].each do |p|
        answer = raw_request(p, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") rescue nil
        refute_match(/HTTP\/1\.1/, answer.to_s)
        assert_equal "https", JSON.parse(curl(p, dir))["scheme"]
      end
      debug.wait_for(/^- TLS handshake failed/)
      assert_equal ["- TLS handshake failed, peer: 127.0.0.1: not TLS (plain HTTP sent to the TLS port?)"],
                   debug.stdout.lines.map(&:chomp).grep(/TLS handshake/)
      assert_equal "", server.stderr
      assert_equal "", debug.stderr
      refute_match(/TLS handshake/, server.stdout)
    end
  end

  # A certificate that has expired stops the boot with one line naming the bind.
  def test_an_expired_certificate_stops_the_boot_naming_the_bind
    Dir.mktmpdir do |dir|
      certificates(dir, from: Time.now - (2 * 86_400), to: Time.now - 86_400)
      server = launch(["-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem",
                       File.join(Support::APPS, "tls.ru")])
      refute server.wait_exit(timeout: 30).success?
      assert_match %r{ssl://127\.0\.0\.1:0\?cert=.*: the certificate expired on \d{4}-\d\d-\d\d}, server.stderr
    end
  end

  # `ssl_bind` without cert and key: a self-signed certificate, made once and kept, in
  # development; refused in production.
  def test_the_development_certificate
    Dir.mktmpdir do |dir|
      File.write("#{dir}/puma.rb", "ssl_bind '127.0.0.1', 0\n")
      env = { "XDG_CACHE_HOME" => "#{dir}/cache" }
      server = start_server("-C", "#{dir}/puma.rb", app: "tls.ru", env: env)
      kept = "#{dir}/cache/catamount/localhost.pem"
      assert_match(%r{^\* ssl://\S+: Using the self-signed development certificate #{Regexp.escape(kept)}}, server.stdout)
      port = server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i
      File.write("#{dir}/ca.pem", File.read(kept)[/-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n/m])
      assert_equal "https", JSON.parse(curl(port, dir))["scheme"]

      production = launch(["-C", "#{dir}/puma.rb", "-e", "production", File.join(Support::APPS, "tls.ru")],
                          env: env)
      refute production.wait_exit(timeout: 30).success?
      assert_match(/needs cert and key \(a self-signed development certificate is made only in the development and test environments\)/,
                   production.stderr)
    end
  end

  # A renewed certificate is served once the workers are replaced: each worker of a phased
  # restart reads the files again (the master read them when it bound the socket).
  def test_a_phased_restart_serves_a_renewed_certificate
    Dir.mktmpdir do |dir|
      certificates(dir)
      File.write("#{dir}/puma.rb", "workers 2\npreload_app! false\n")
      server, port = tls_server(dir, "-C", "#{dir}/puma.rb")
      old = presented_certificate(port, dir).serial
      assert wait_until(timeout: 30) { server.stdout.scan(/Worker \d \(PID: \d+\) booted/).size >= 2 }
      ca = File.read("#{dir}/ca.pem")
      renewed = certificates(Dir.mktmpdir(nil, dir))
      FileUtils.cp(["#{renewed}/cert.pem", "#{renewed}/key.pem"], dir)
      File.write("#{dir}/ca.pem", ca + File.read("#{renewed}/ca.pem"))
      assert_equal old, presented_certificate(port, dir).serial, "the running workers keep theirs"
      server.signal("USR1")
      server.wait_for(/Phased restart complete, phase: 1/, timeout: 60)
      refute_equal old, presented_certificate(port, dir).serial
      assert_equal "https", JSON.parse(curl(port, dir))["scheme"]
    end
  end

  # A renewal gone wrong (the new certificate copied, its key not yet): the workers of a phased
  # restart boot and keep serving the certificate loaded before, each saying so; once the key
  # is there too, the next phased restart serves the new one.
  def test_a_renewed_certificate_that_does_not_load_keeps_the_old_one
    Dir.mktmpdir do |dir|
      certificates(dir)
      File.write("#{dir}/puma.rb", "workers 2\npreload_app! false\n")
      server, port = tls_server(dir, "-C", "#{dir}/puma.rb")
      assert wait_until(timeout: 30) { server.stdout.scan(/Worker \d \(PID: \d+\) booted/).size >= 2 }
      old = presented_certificate(port, dir).serial
      ca = File.read("#{dir}/ca.pem")
      renewed = certificates(Dir.mktmpdir(nil, dir))
      File.write("#{dir}/ca.pem", ca + File.read("#{renewed}/ca.pem"))
      FileUtils.cp("#{renewed}/cert.pem", dir)
      server.signal("USR1")
      server.wait_for(/Phased restart complete, phase: 1/, timeout: 60)
      assert_equal old, presented_certificate(port, dir).serial
      assert_equal "https", JSON.parse(curl(port, dir))["scheme"]
      lines = server.stderr.scan(/^.*TLS certificate not renewed.*$/)
      assert_equal 2, lines.size, server.stderr
      assert_match(%r{! TLS certificate not renewed, ssl://127\.0\.0\.1:0\?cert=.*: the key does not match the certificate; still serving the one loaded before$}, lines.first)

      FileUtils.cp("#{renewed}/key.pem", dir)
      server.signal("USR1")
      server.wait_for(/Phased restart complete, phase: 2/, timeout: 60)
      refute_equal old, presented_certificate(port, dir).serial
    end
  end
end
