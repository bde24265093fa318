# frozen_string_literal: true

require "openssl"
require "rbconfig"
require "socket"
require "timeout"
require "tmpdir"
require_relative "scraper"
require_relative "placement"
require_relative "child"

module Bench
  ROOT = File.expand_path("../..", __dir__)
  TARGET_DIR = ENV.fetch("CARGO_TARGET_DIR", File.join(Dir.home, ".cache", "catamount", "target"))
  TOOLS = File.join(TARGET_DIR, "release", "catamount-bench")

  # A port free now on the loopback (the OS picks it).
  def self.free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  # The key and certificate both servers use for the TLS scenarios: ECDSA P-256 (what most
  # certificates issued today are; an RSA 2048 key would make each new connection's handshake
  # several times dearer for both), self-signed for localhost, made once per run in `dir`.
  Certificate = Struct.new(:cert, :key) do
    def self.write(dir)
      key = OpenSSL::PKey::EC.generate("prime256v1")
      cert = OpenSSL::X509::Certificate.new
      cert.version = 2
      cert.serial = 1
      cert.subject = cert.issuer = OpenSSL::X509::Name.parse("/CN=localhost")
      cert.public_key = key
      cert.not_before = Time.now - 60
      cert.not_after = Time.now + 86_400
      ef = OpenSSL::X509::ExtensionFactory.new(cert, cert)
      cert.add_extension(ef.create_extension("subjectAltName", "DNS:localhost,IP:127.0.0.1"))
      cert.sign(key, OpenSSL::Digest.new("SHA256"))
      paths = new(File.join(dir, "cert.pem"), File.join(dir, "key.pem"))
      File.write(paths.cert, cert.to_pem)
      File.write(paths.key, key.private_to_pem, perm: 0o600)
      paths
    end
  end

  # Where a server listens: a loopback port, plain or TLS (`certificate` nil: plain). Both
  # servers take the same `-b` URL (verify_mode=none: no client certificates, Puma's default
  # needs it spelled out).
  Bind = Struct.new(:port, :certificate) do
    def tls?
      !certificate.nil?
    end

    def to_s
      return "tcp://127.0.0.1:#{port}" unless tls?

      "ssl://127.0.0.1:#{port}?key=#{certificate.key}&cert=#{certificate.cert}&verify_mode=none"
    end

    def url(path)
      "#{tls? ? 'https' : 'http'}://127.0.0.1:#{port}#{path}"
    end
  end

  # How a server under test is started. `mode` has min/max threads and workers (nil: single).
  class ServerKind
    attr_reader :key, :label

    def initialize(key, label)
      @key = key
      @label = label
    end

    # nil when the mode can run, else why not (shown in the table instead of a number).
    def unsupported(_mode)
      nil
    end

    # Where it listens when the scenario asks for `bind`.
    def bind_for(bind)
      bind
    end
  end

  # Catamount from this checkout (bin/catamount with the extension `make build` put in lib/).
  class CatamountKind < ServerKind
    def initialize(key = "catamount", label = "Catamount")
      super
    end

    def command(mode, bind, rackup)
      cluster = mode.workers ? ["-w", mode.workers.to_s, "--preload"] : []
      [RbConfig.ruby, File.join(ROOT, "bin", "catamount"), "-e", "production", "-t", "#{mode.min}:#{mode.max}",
       *cluster, "-b", bind.to_s, rackup]
    end
  end

  # The same Catamount over plain TCP, beside it in a TLS scenario: what TLS costs it.
  class CatamountPlainKind < CatamountKind
    def initialize
      super("catamount_plain", "Catamount, plain TCP")
    end

    def bind_for(bind)
      Bind.new(bind.port, nil)
    end
  end

  # The same Catamount with its metrics listener on (`--metrics-url`), which the bench scrapes
  # while it loads the server (bench/lib/scraper.rb): what turning metrics on costs.
  class CatamountMetricsKind < CatamountKind
    attr_reader :metrics_port

    def initialize
      super("catamount_metrics", "Catamount, metrics on")
    end

    def command(mode, bind, rackup)
      @metrics_port = Bench.free_port
      super.insert(-2, "--metrics-url", "tcp://127.0.0.1:#{@metrics_port}")
    end
  end

  # The same Catamount in its fiber mode (`fiber_scheduler`, a config DSL option only: a config
  # file in the run's log dir), beside it in the IO-bound scenarios.
  class CatamountFiberKind < CatamountKind
    def initialize(log_dir)
      super("catamount_fiber", "Catamount, fiber mode")
      @config = File.join(log_dir, "fiber_mode.rb")
      File.write(@config, "fiber_scheduler\n")
    end

    def command(mode, bind, rackup)
      super.insert(-2, "-C", @config)
    end
  end

  # Debian's Puma 5.6.5 (`apt-get install puma`), same flags.
  class PumaKind < ServerKind
    def initialize
      super("puma", "Puma")
    end

    def command(mode, bind, rackup)
      cluster = mode.workers ? ["-w", mode.workers.to_s, "--preload"] : []
      ["puma", "-e", "production", "-t", "#{mode.min}:#{mode.max}", *cluster, "-b", bind.to_s, rackup]
    end
  end

  # The pure-Rust keep-alive server (one reactor thread, no Ruby): what the machine can do.
  # `args` choose the answer (`--body-bytes`, `--body-from`; none means the hello world) and
  # the threads; a TLS bind's certificate makes it serve TLS through rustls.
  class LimitKind < ServerKind
    def initialize(args = [])
      super("limit", "pure-Rust limit")
      @args = args
    end

    def command(_mode, bind, _rackup)
      tls = bind.tls? ? ["--tls-cert", bind.certificate.cert, "--tls-key", bind.certificate.key] : []
      [TOOLS, "limit", "--port", bind.port.to_s, *tls, *@args]
    end
  end

  # A started server: its process group, its log, and a bounded wait until it answers.
  class RunningServer
    include Child
    attr_reader :kind, :pid, :port, :log

    # `certificate`: serve over TLS with it (unless the kind serves plain TCP only); `env`: more
    # environment for the server (the PostgreSQL apps' PGHOST...).
    def initialize(kind, mode, rackup, probe_path, log_dir, certificate: nil, env: {})
      @kind = kind
      @bind = kind.bind_for(Bind.new(Bench.free_port, certificate))
      @port = @bind.port
      @probe_path = probe_path
      @log = File.join(log_dir, "#{kind.key}-#{File.basename(File.dirname(rackup))}-#{File.basename(rackup, '.ru')}-#{@port}.log")
      @pid = Process.spawn({ "RACK_ENV" => "production", **env }, *Placement.server(kind.command(mode, @bind, rackup)),
                           chdir: File.dirname(rackup), out: @log, err: @log, pgroup: Placement.spawn_pgroup?)
    end

    def url(path)
      @bind.url(path)
    end

    # Runs the block (a load) with /metrics scraped beside it when this server serves metrics.
    def under_load(&block)
      port = @kind.respond_to?(:metrics_port) && @kind.metrics_port
      return yield unless port

      (@scraper ||= Scraper.new(port)).during(&block)
    end

    # The scrapes made so far (nil for a server without metrics).
    def scrapes
      @scraper && { ok: @scraper.ok, failed: @scraper.failed }
    end

    # Waits (at most `timeout` seconds) until the probe path answers 200.
    def wait_ready(timeout: 120)
      deadline = now + timeout
      loop do
        return self if probe == 200
        raise "#{@kind.label} exited while booting; log #{@log}:\n#{File.read(@log)[-2000..]}" if exited?
        raise "#{@kind.label} did not answer within #{timeout}s; log #{@log}" if now > deadline

        sleep 0.1
      end
    end

    # TERM, then (after 20 s) KILL for the whole process group.
    def stop
      stop_child("TERM", 20)
    end

    private

    def probe
      Socket.tcp("127.0.0.1", @port, connect_timeout: 1) do |tcp|
        sock = @bind.tls? ? tls_client(tcp) : tcp
        sock.write("GET #{@probe_path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        return nil unless tcp.wait_readable(10)

        sock.readpartial(64)[/\AHTTP\/1\.\d (\d{3})/, 1].to_i
      end
    rescue SystemCallError, EOFError, IOError, OpenSSL::SSL::SSLError, Timeout::Error
      nil
    end

    # The probe's TLS session on `tcp` (the certificate is the run's own: not verified), its
    # handshake bounded by the socket's timeouts.
    def tls_client(tcp)
      context = OpenSSL::SSL::SSLContext.new
      context.verify_mode = OpenSSL::SSL::VERIFY_NONE
      ssl = OpenSSL::SSL::SSLSocket.new(tcp, context)
      ssl.sync_close = true
      Timeout.timeout(10) { ssl.connect }
      ssl
    end
  end
end
