# frozen_string_literal: true

require "net/http"
require "openssl"
require "timeout"

module Support
  # Certificates made at test time for the TLS tests (a CA, a server certificate it signed for
  # localhost/127.0.0.1, a client certificate), and the certificate a TLS port presents, read
  # with Ruby's OpenSSL client. Include beside Support::ServerTest.
  module Certificates
    # Writes ca.pem, cert.pem, key.pem, client.pem and client-key.pem into `dir` (certificates
    # valid from `from` to `to`, each with a fresh serial and a CA of its own); returns `dir`.
    def certificates(dir, from: Time.now - 3600, to: Time.now + 86_400)
      ca_key = OpenSSL::PKey::EC.generate("prime256v1")
      ca = issue(ca_key, ca_key, nil, "/CN=Catamount test CA #{rand(1 << 32)}", from, to) do |c, ef|
        c.add_extension(ef.create_extension("basicConstraints", "CA:TRUE", true))
        c.add_extension(ef.create_extension("keyUsage", "keyCertSign, cRLSign", true))
      end
      key = OpenSSL::PKey::EC.generate("prime256v1")
      cert = issue(key, ca_key, ca, "/CN=localhost", from, to) do |c, ef|
        c.add_extension(ef.create_extension("subjectAltName", "DNS:localhost,IP:127.0.0.1"))
      end
      client_key = OpenSSL::PKey::EC.generate("prime256v1")
      client = issue(client_key, ca_key, ca, "/CN=a client", from, to) do |c, ef|
        c.add_extension(ef.create_extension("extendedKeyUsage", "clientAuth"))
      end
      File.write("#{dir}/ca.pem", ca.to_pem)
      File.write("#{dir}/cert.pem", cert.to_pem)
      File.write("#{dir}/key.pem", key.private_to_pem)
      File.write("#{dir}/client.pem", client.to_pem)
      File.write("#{dir}/client-key.pem", client_key.private_to_pem)
      dir
    end

    def issue(key, signer_key, signer, subject, from, to)
      c = OpenSSL::X509::Certificate.new
      c.version = 2
      c.serial = rand(1 << 64)
      c.subject = OpenSSL::X509::Name.parse(subject)
      c.issuer = signer ? signer.subject : c.subject
      c.public_key = key
      c.not_before = from
      c.not_after = to
      ef = OpenSSL::X509::ExtensionFactory.new
      ef.subject_certificate = c
      ef.issuer_certificate = signer || c
      yield c, ef
      c.sign(signer_key, OpenSSL::Digest.new("SHA256"))
      c
    end

    # GET `path` on a new TLS connection to `port` with Net::HTTP, verifying the server against
    # `dir`/ca.pem; `client:` a directory whose client.pem and client-key.pem it presents.
    # Returns the Net::HTTPResponse.
    def https_get(port, dir, path = "/", client: nil)
      http = Net::HTTP.new("localhost", port)
      http.ipaddr = "127.0.0.1"
      http.use_ssl = true
      http.ca_file = "#{dir}/ca.pem"
      http.verify_mode = OpenSSL::SSL::VERIFY_PEER
      if client
        http.cert = OpenSSL::X509::Certificate.new(File.read("#{client}/client.pem"))
        http.key = OpenSSL::PKey.read(File.read("#{client}/client-key.pem"))
      end
      http.open_timeout = http.read_timeout = http.write_timeout = 20
      http.max_retries = 0
      http.start { |h| h.get(path) }
    end

    # The certificate a TLS connection to `port` is offered, verified against `dir`/ca.pem.
    def presented_certificate(port, dir)
      ctx = OpenSSL::SSL::SSLContext.new
      ctx.ca_file = "#{dir}/ca.pem"
      ctx.verify_mode = OpenSSL::SSL::VERIFY_PEER
      sock = Socket.tcp("127.0.0.1", port, connect_timeout: 10)
      ssl = OpenSSL::SSL::SSLSocket.new(sock, ctx)
      ssl.hostname = "localhost"
      ssl.sync_close = true
      Timeout.timeout(20) { ssl.connect }
      ssl.peer_cert
    ensure
      ssl ? ssl.close : sock&.close
    end

    # A server (app tls.ru) with `config` as its puma.rb, on a TLS listener with the
    # certificates in `dir`; returns it and the TLS port.
    def start_tls_server(dir, config)
      File.write("#{dir}/puma.rb", config)
      server = start_server("-C", "#{dir}/puma.rb", "-b", "ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem",
                            app: "tls.ru")
      [server, server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i]
    end

    # GET /remote (tls.ru: REMOTE_ADDR as the app sees it) through TLS over `io`, already
    # connected (a PROXY header already sent or not), verified with the CA in `dir`.
    def remote_over(io, dir)
      ctx = OpenSSL::SSL::SSLContext.new
      ctx.ca_file = "#{dir}/ca.pem"
      ctx.verify_mode = OpenSSL::SSL::VERIFY_PEER
      ssl = OpenSSL::SSL::SSLSocket.new(io, ctx)
      ssl.hostname = "localhost"
      ssl.sync_close = true
      Timeout.timeout(20) do
        ssl.connect
        ssl.write("GET /remote HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        ssl.read.split("\r\n\r\n", 2).last
      end
    ensure
      ssl&.close
    end
  end
end
