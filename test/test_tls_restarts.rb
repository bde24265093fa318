# frozen_string_literal: true

require "helper"
require "certificates"
require "steady_load"

# A renewed certificate across a hot restart (USR2), single and cluster mode: the certificate
# and key files are replaced, the signal sent, and new connections then get the new
# certificate (its serial, read with Ruby's OpenSSL client), while TLS clients that connect
# throughout (fresh connections and keep-alive ones) are never refused. The phased-restart
# case is test_tls.rb's. App: tls.ru.
class TestTlsRestarts < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  # Serves `dir`'s certificate (with `args`), then, under a load of TLS clients, replaces it with
  # another CA's and sends USR2; waits for `restarted` on stdout; asserts the new serial is
  # served and no client failed.
  def rotate_across_a_hot_restart(dir, *args, restarted:)
    certificates(dir)
    renewed = certificates(FileUtils.mkdir_p("#{dir}/renewed").first)
    # The clients trust both CAs from the start: only the server changes.
    File.write("#{dir}/ca.pem", File.read("#{dir}/ca.pem") + File.read("#{renewed}/ca.pem"))
    server = launch(["-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem", *args,
                     File.join(Support::APPS, "tls.ru")], boot: true)
    port = server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i
    yield server if block_given?
    old = presented_certificate(port, dir).serial
    new = OpenSSL::X509::Certificate.new(File.read("#{renewed}/cert.pem")).serial
    load = SteadyLoad.new(port, tls: "#{dir}/ca.pem", keep_alive: 2, fresh: 2)
    assert load.wait_for_more(20), "the load never flowed: #{load.summary}"
    FileUtils.cp(["#{renewed}/cert.pem", "#{renewed}/key.pem"], dir)
    assert_equal old, presented_certificate(port, dir).serial, "read at boot, not per connection"
    server.signal("USR2")
    server.wait_for(restarted, timeout: 60)
    assert_equal new, presented_certificate(port, dir).serial
    assert load.wait_for_more(20), "no answers after the restart: #{load.summary}"
    load.stop
    warn load.summary if ENV["LOAD_SUMMARY"]
    assert_empty load.failures, load.summary
    assert_match(%r{Listening on ssl://127\.0\.0\.1:#{port}.*\(inherited\)}, server.stdout.split("Restarting").last)
  ensure
    load&.stop
    kill_named_workers(server)
  end

  def test_single_mode_hot_restart_serves_a_renewed_certificate_and_refuses_no_one
    Dir.mktmpdir do |dir|
      rotate_across_a_hot_restart(dir, restarted: /Restarting.*Use Ctrl-C to stop/m)
    end
  end

  def test_cluster_hot_restart_serves_a_renewed_certificate_and_refuses_no_one
    Dir.mktmpdir do |dir|
      # Both new workers booted (in either order).
      rotate_across_a_hot_restart(dir, "-w", "2", restarted: /Restarting(?=.*Worker 0 \(PID: \d+\) booted)(?=.*Worker 1 \(PID: \d+\) booted)/m) do |server|
        2.times { |i| server.wait_for(/Worker #{i} \(PID: \d+\) booted/, timeout: 30) }
      end
    end
  end
end
