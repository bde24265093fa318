# frozen_string_literal: true

require "helper"
require "certificates"

# Every TLS option that cannot be served stops the boot: the real server, given one bad
# `-b ssl://...` bind or `ssl_bind` line, exits non-zero with one line on stderr that names the
# bind (the URL; for an `ssl_bind` line its file:line too) and says what is wrong, and never
# listens. One test per row of CASES.
class TestTlsOptions < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  # name => [form, spec, where, what]. `form` :url is `-b ssl://127.0.0.1:0?QUERY`, `spec` the
  # query; :dsl is a config file whose second line is `ssl_bind "127.0.0.1", 0, SPEC`. D in
  # `spec` is the directory with the certificates (see #make_files). `where` is how the line
  # names the bind: :url (the URL as given), :line (`puma.rb:2: ssl_bind:`, what the file's
  # line itself gets wrong) or a String it contains (`puma.rb:2: could not listen on ssl://...`,
  # what is found opening the listener); `what` a String the line contains.
  CASES = {
    unreadable_key: [:url, "cert=D/cert.pem&key=D/missing.pem", :url,
                     "cannot read key D/missing.pem: No such file or directory"],
    unreadable_cert: [:url, "cert=D/missing.pem&key=D/key.pem", :url,
                      "cannot read cert D/missing.pem: No such file or directory"],
    key_of_another_certificate: [:url, "cert=D/cert.pem&key=D/other/key.pem", :url,
                                 "the key does not match the certificate"],
    expired_certificate: [:url, "cert=D/expired/cert.pem&key=D/expired/key.pem", :url,
                          "the certificate expired on "],
    certificate_not_valid_yet: [:url, "cert=D/future/cert.pem&key=D/future/key.pem", :url,
                                "the certificate is not valid yet (from "],
    pem_without_a_certificate: [:url, "cert=D/key.pem&key=D/key.pem", :url,
                                "cert D/key.pem: holds no certificate"],
    pem_without_a_key: [:url, "cert=D/cert.pem&key=D/cert.pem", :url,
                        "key D/cert.pem: holds no private key"],
    encrypted_key_without_password_command: [:url, "cert=D/cert.pem&key=D/encrypted.pem", :url,
                                             "key D/encrypted.pem: the key is encrypted: key_password_command must give its passphrase"],
    password_command_that_fails: [:url, "cert=D/cert.pem&key=D/encrypted.pem&key_password_command=exit%201", :url,
                                  "key_password_command (exit 1): it failed (exit status: 1)"],
    password_command_with_the_wrong_password: [:url, "cert=D/cert.pem&key=D/encrypted.pem&key_password_command=echo%20wrong", :url,
                                               "key D/encrypted.pem: the passphrase from key_password_command does not open the key"],
    # Bounded by the server's own limit (10 s, no knob).
    password_command_that_hangs: [:url, "cert=D/cert.pem&key=D/encrypted.pem&key_password_command=sleep%2030", :url,
                                  "key_password_command (sleep 30): still running after 10 s"],
    bad_verify_mode: [:url, "cert=D/cert.pem&key=D/key.pem&verify_mode=sometimes", :url,
                      "verify_mode must be none, peer or force_peer, not \"sometimes\""],
    # Puma 5.6.5 refuses it too ("Please specify the SSL ca via 'ca='", exit 1).
    verify_mode_peer_without_ca: [:url, "cert=D/cert.pem&key=D/key.pem&verify_mode=peer", :url,
                                  "verify_mode=peer and force_peer need ca="],
    unreadable_ca: [:url, "cert=D/cert.pem&key=D/key.pem&verify_mode=force_peer&ca=D/missing-ca.pem", :url,
                    "cannot read ca D/missing-ca.pem"],
    unknown_min_version: [:url, "cert=D/cert.pem&key=D/key.pem&min_version=TLSv1_4", :url,
                          "min_version must be TLSv1_2 or TLSv1_3, not \"TLSv1_4\""],
    a_version_rustls_never_speaks: [:url, "cert=D/cert.pem&key=D/key.pem&min_version=TLSv1_1", :url,
                                    "min_version=TLSv1_1: only TLS 1.2 and 1.3 are spoken"],
    min_version_above_max_version: [:url, "cert=D/cert.pem&key=D/key.pem&min_version=TLSv1_3&max_version=TLSv1_2", :url,
                                    "min_version is above max_version"],
    cipher_filter_of_an_unknown_word: [:url, "cert=D/cert.pem&key=D/key.pem&ssl_cipher_filter=HIGH:NOPE", :url,
                                       "\"NOPE\" is not an OpenSSL cipher name"],
    cipher_filter_of_cbc_suites_only: [:url, "cert=D/cert.pem&key=D/key.pem&ssl_cipher_filter=AES128-SHA:AES256-SHA256", :url,
                                       "leaves no TLS 1.2 suite rustls offers (it offers ECDHE-ECDSA-AES256-GCM-SHA384"],
    cipher_filter_of_rc4_only: [:url, "cert=D/cert.pem&key=D/key.pem&ssl_cipher_filter=RC4-SHA", :url,
                                "; not offered: RC4-SHA)"],
    ciphersuites_unknown: [:url, "cert=D/cert.pem&key=D/key.pem&ssl_ciphersuites=TLS_AES_512_GCM_SHA512", :url,
                           "ssl_ciphersuites: \"TLS_AES_512_GCM_SHA512\" is not a TLS 1.3 suite name"],
    ciphersuites_rustls_lacks: [:url, "cert=D/cert.pem&key=D/key.pem&ssl_ciphersuites=TLS_AES_128_CCM_SHA256", :url,
                                "leaves no TLS 1.3 suite rustls offers (it offers TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256; not offered: TLS_AES_128_CCM_SHA256)"],
    verification_flags_rustls_cannot_honour: [:url, "cert=D/cert.pem&key=D/key.pem&verify_mode=peer&ca=D/ca.pem&verification_flags=PARTIAL_CHAIN", :url,
                                              "verification_flags (PARTIAL_CHAIN) are OpenSSL's and cannot be honoured by rustls"],
    session_timeout_rustls_cannot_honour: [:url, "cert=D/cert.pem&key=D/key.pem&reuse=100,60", :url,
                                           "reuse: a session timeout cannot be honoured"],
    # Puma ignores a parameter it does not know; a typo would then be a silently different
    # server, so Catamount refuses it.
    unknown_parameter: [:url, "cert=D/cert.pem&key=D/key.pem&no_tlsv1_2=true", :url,
                        "unknown parameter \"no_tlsv1_2\" for ssl://"],
    # Puma fails with a NoMethodError on this.
    ssl_on_a_unix_socket: [:path, "D/app.sock?cert=D/cert.pem&key=D/key.pem", :url,
                           "TLS on a UNIX socket is not supported"],

    dsl_unreadable_key: [:dsl, "cert: 'D/cert.pem', key: 'D/missing.pem'",
                         "D/puma.rb:2: could not listen on ssl://127.0.0.1:0?cert=D/cert.pem&key=D/missing.pem",
                         "cannot read key D/missing.pem"],
    dsl_pem_text_of_another_key: [:dsl, "cert_pem: File.read('D/cert.pem'), key_pem: File.read('D/other/key.pem')",
                                  "D/puma.rb:2: could not listen on ssl://127.0.0.1:0:", "the key does not match the certificate"],
    dsl_pem_text_without_a_key: [:dsl, "cert_pem: File.read('D/cert.pem'), key_pem: File.read('D/cert.pem')",
                                 "D/puma.rb:2: could not listen on ssl://127.0.0.1:0:", "key_pem: holds no private key"],
    dsl_expired_certificate: [:dsl, "cert: 'D/expired/cert.pem', key: 'D/expired/key.pem'",
                              "D/puma.rb:2: could not listen on ssl://127.0.0.1:0?cert=D/expired/cert.pem", "the certificate expired on "],
    dsl_password_command_that_fails: [:dsl, "cert: 'D/cert.pem', key: 'D/encrypted.pem', key_password_command: 'exit 1'",
                                      "D/puma.rb:2: could not listen on ssl://127.0.0.1:0?", "key_password_command (exit 1): it failed"],
    dsl_bad_verify_mode: [:dsl, "cert: 'D/cert.pem', key: 'D/key.pem', verify_mode: 'sometimes'", :line,
                          "verify_mode must be none, peer or force_peer"],
    dsl_verify_mode_peer_without_ca: [:dsl, "cert: 'D/cert.pem', key: 'D/key.pem', verify_mode: :force_peer", :line,
                                      "need ca="],
    dsl_min_version_above_max_version: [:dsl, "cert: 'D/cert.pem', key: 'D/key.pem', min_version: 'TLSv1_3', max_version: 'TLSv1_2'",
                                        :line, "min_version is above max_version"],
    dsl_cipher_filter_of_rc4_only: [:dsl, "cert: 'D/cert.pem', key: 'D/key.pem', ssl_cipher_filter: 'RC4'",
                                    "D/puma.rb:2: could not listen on ssl://127.0.0.1:0?", "ssl_cipher_filter \"RC4\" leaves no TLS 1.2 suite"],
    dsl_verification_flags: [:dsl, "cert: 'D/cert.pem', key: 'D/key.pem', verify_mode: 'peer', ca: 'D/ca.pem', verification_flags: ['PARTIAL_CHAIN']",
                             "D/puma.rb:2: could not listen on ssl://127.0.0.1:0?", "cannot be honoured by rustls"],
    dsl_unknown_key: [:dsl, "cert: 'D/cert.pem', key: 'D/key.pem', sni: 'x'", :line, "unknown key \"sni\""],
    dsl_only_a_cert: [:dsl, "cert: 'D/cert.pem'", :line, "a cert needs its key"],
  }.freeze

  # The certificates and keys the rows name, in `dir`.
  def make_files(dir)
    certificates(dir)
    certificates(FileUtils.mkdir_p("#{dir}/other").first)
    certificates(FileUtils.mkdir_p("#{dir}/expired").first, from: Time.now - (2 * 86_400), to: Time.now - 86_400)
    certificates(FileUtils.mkdir_p("#{dir}/future").first, from: Time.now + 86_400, to: Time.now + (2 * 86_400))
    key = OpenSSL::PKey.read(File.read("#{dir}/key.pem"))
    File.write("#{dir}/encrypted.pem", key.private_to_pem(OpenSSL::Cipher.new("aes-256-cbc"), "sesame"))
  end

  # Boots with the row's bind; returns [the one stderr line, the bind as the line should name it].
  def refused(dir, form, spec)
    spec = spec.gsub("D/", "#{dir}/")
    app = File.join(Support::APPS, "tls.ru")
    case form
    when :url, :path
      url = form == :url ? "ssl://127.0.0.1:0?#{spec}" : "ssl://#{spec}"
      server = launch(["-b", url, app])
    when :dsl
      File.write("#{dir}/puma.rb", "# a TLS listener\nssl_bind \"127.0.0.1\", 0, #{spec}\n")
      url = "#{dir}/puma.rb:2: ssl_bind: "
      server = launch(["-C", "#{dir}/puma.rb", app])
    end
    status = server.wait_exit(timeout: 40)
    refute status.success?, "booted: #{server.stdout}"
    refute_match(/Listening on|Use Ctrl-C/, server.stdout, "never listens")
    lines = server.stderr.lines
    assert_equal 1, lines.size, "one line:\n#{server.stderr}"
    [lines.first.chomp, url]
  end

  CASES.each do |name, (form, spec, where, what)|
    define_method("test_#{name}") do
      Dir.mktmpdir do |dir|
        make_files(dir)
        line, url = refused(dir, form, spec)
        assert line.start_with?("catamount: "), line
        assert_includes line, where.is_a?(String) ? where.gsub("D/", "#{dir}/") : url
        assert_includes line, what.gsub("D/", "#{dir}/")
      end
    end
  end
end
