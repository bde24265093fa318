# frozen_string_literal: true

require "helper"
require "certificates"

# What the boot says about a TLS bind besides refusing it (a cipher rustls does not have, left
# out of a list that still leaves suites) names the bind it is about. App: tls.ru.
class TestTlsNotes < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  def test_a_cipher_left_out_is_reported_with_its_bind
    Dir.mktmpdir do |dir|
      certificates(dir)
      files = "cert=#{dir}/cert.pem&key=#{dir}/key.pem"
      noted = "ssl://127.0.0.1:0?#{files}&ssl_cipher_filter=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:RC4-SHA"
      server = start_server("-b", "ssl://127.0.0.1:0?#{files}", "-b", noted, app: "tls.ru")
      line = server.stdout.lines.grep(/RC4-SHA not offered by rustls/).first
      assert_equal "* #{noted}: ssl_cipher_filter: RC4-SHA not offered by rustls (left out)\n", line
    end
  end
end
