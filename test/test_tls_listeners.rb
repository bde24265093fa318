# frozen_string_literal: true

require "helper"
require "certificates"

# Plain and TLS listeners side by side in one server, single and cluster mode: a tcp://, a
# unix://, an ssl:// bind and an ssl_bind requiring client certificates (force_peer). Each
# serves, and each request sees its own listener's scheme, HTTPS and port; in cluster mode TLS
# requests reach both workers, and every listener still serves after a phased restart.
# App: tls.ru.
class TestTlsListeners < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  Listeners = Struct.new(:tcp, :unix, :tls, :mutual)

  # Boots a server with the four listeners (and `more` config lines) from a config file in
  # `dir`; yields it and its Listeners.
  def side_by_side(dir, more = "")
    certificates(dir)
    File.write("#{dir}/puma.rb", <<~RUBY)
      bind "tcp://127.0.0.1:0"
      bind "unix://#{dir}/app.sock"
      bind "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem"
      ssl_bind "127.0.0.1", 0, cert: "#{dir}/cert.pem", key: "#{dir}/key.pem", verify_mode: "force_peer", ca: "#{dir}/ca.pem"
      #{more}
    RUBY
    server = launch(["-C", "#{dir}/puma.rb", File.join(Support::APPS, "tls.ru")], boot: true)
    tls, mutual = server.stdout.scan(%r{Listening on ssl://127\.0\.0\.1:(\d+)}).flatten.map(&:to_i)
    assert_includes server.stdout, "Listening on unix://#{dir}/app.sock"
    yield server, Listeners.new(server.port, "#{dir}/app.sock", tls, mutual)
  ensure
    kill_named_workers(server)
  end

  def facts(response)
    JSON.parse(response.body).values_at("scheme", "https", "port", "peercert")
  end

  # Each listener answers, with http on the plain ones and https on the TLS ones; the
  # force_peer one only to a client with a certificate its CA signed.
  def assert_each_listener_serves(dir, listeners)
    assert_equal ["http", nil, listeners.tcp.to_s, nil], facts(get(listeners.tcp, "/"))
    unix = UNIXSocket.new(listeners.unix)
    unix.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_equal ["http", nil, "80", nil], facts(read_response(unix))
    assert_equal ["https", "https", listeners.tls.to_s, nil], facts(https_get(listeners.tls, dir))
    assert_equal ["https", "https", listeners.mutual.to_s, "/CN=a client"],
                 facts(https_get(listeners.mutual, dir, client: dir))
    assert_raises(OpenSSL::SSL::SSLError, EOFError, Errno::ECONNRESET, Errno::EPIPE) do
      https_get(listeners.mutual, dir)
    end
  ensure
    unix&.close
  end

  def test_plain_and_tls_listeners_side_by_side
    Dir.mktmpdir do |dir|
      side_by_side(dir) do |server, listeners|
        assert_each_listener_serves(dir, listeners)
        assert_equal "", server.stderr
      end
    end
  end

  def test_plain_and_tls_listeners_side_by_side_in_cluster_mode_and_after_a_phased_restart
    Dir.mktmpdir do |dir|
      side_by_side(dir, "workers 2") do |server, listeners|
        workers = 2.times.map { |i| server.wait_for(/Worker #{i} \(PID: (\d+)\) booted/, timeout: 30)[1].to_i }
        assert_each_listener_serves(dir, listeners)
        answered = []
        200.times do
          answered |= [https_get(listeners.tls, dir, "/pid").body.to_i]
          break if answered.size == 2
        end
        assert_equal workers.sort, answered.sort, "TLS connections reach both workers"

        server.signal("USR1")
        server.wait_for(/Phased restart complete, phase: 1/, timeout: 60)
        assert_each_listener_serves(dir, listeners)
      end
    end
  end
end
