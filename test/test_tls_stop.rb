# frozen_string_literal: true

require "helper"
require "certificates"

# A stop or a hot restart while TLS handshakes are unfinished: a connection that never
# completes its handshake gets the stop's grace, as a plain connection that never sends its
# request does, not the whole first_data_timeout (set far beyond every wait here). App: tls.ru.
class TestTlsStop < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  # Yields a TLS server, its port and the certificates' directory, with two handshakes stalled
  # on it: one silent connection and one that stopped halfway through its ClientHello.
  def with_stalled_handshakes
    Dir.mktmpdir do |dir|
      certificates(dir)
      File.write("#{dir}/puma.rb", "first_data_timeout 600\n")
      server = start_server("-C", "#{dir}/puma.rb", "-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem",
                            app: "tls.ru")
      port = server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i
      stalled = [Socket.tcp("127.0.0.1", port, connect_timeout: 10), Socket.tcp("127.0.0.1", port, connect_timeout: 10)]
      stalled.last.write("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
      yield server, port, dir, stalled
    ensure
      stalled&.each(&:close)
    end
  end

  def https_get(port, dir)
    Net::HTTP.start("localhost", port, use_ssl: true, ca_file: "#{dir}/ca.pem", ipaddr: "127.0.0.1") { |h| h.get("/") }
  end

  def test_term_ends_the_server_despite_stalled_handshakes
    with_stalled_handshakes do |server, port, dir, stalled|
      assert_equal "200", https_get(port, dir).code
      server.signal("TERM")
      assert_equal Signal.list["TERM"], server.wait_exit(timeout: 20).termsig
      stalled.each { |s| assert_equal "", read_until_close(s) }
    end
  end

  def test_a_hot_restart_is_not_held_up_by_stalled_handshakes
    with_stalled_handshakes do |server, port, dir, _stalled|
      server.signal("USR2")
      server.wait_for(/Restarting.*Use Ctrl-C to stop/m, timeout: 20)
      assert_equal "200", https_get(port, dir).code
    end
  end
end
