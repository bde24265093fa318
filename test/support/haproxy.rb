# frozen_string_literal: true

require "socket"
require "net/http"
require "front_process"

module Support
  # Debian's HAProxy in front of a test's server: its own config in a temp dir, a free loopback
  # port (and the same port on ::1 when the machine has it), run in the foreground (`-db`: one
  # process, its PID the one spawned, killed by PID after the test), every wait bounded. Its
  # statistics (CSV) answer on STATS_PATH of the same port. Include beside Support::ServerTest.
  module Haproxy
    include FrontProcess
    BINARY = ["/usr/sbin/haproxy", "haproxy"].find { |b| b.include?("/") ? File.executable?(b) : true }
    STATS_PATH = "/haproxy-stats"

    # Whether this machine can bind ::1 (the IPv6 client checks need it).
    def self.ipv6?
      @ipv6 = begin
        TCPServer.new("::1", 0).close
        true
      rescue SystemCallError
        false
      end if @ipv6.nil?
      @ipv6
    end

    # Starts HAProxy in HTTP mode in front of `upstream` (a port on 127.0.0.1, or a UNIX
    # socket's path); `server_options` go on the backend's server line (`send-proxy-v2`...),
    # `backend` lines into the backend (`option forwardfor`...). Health checks (`option
    # httpchk`) every `check_ms`. Returns its port.
    # `mode: "tcp"` relays bytes (TLS passes through to a TLS listener), with TCP checks and
    # no statistics.
    # Several servers: `upstream` is an Array of whole `server` lines' arguments (name address
    # options), `check` the httpchk request.
    def start_haproxy(dir, upstream, server_options: "", backend: [], check_ms: 100, mode: "http", check: "GET /")
      3.times do
        port = free_port # HAProxy cannot be told to pick a port and say which
        config = File.join(dir, "haproxy.cfg")
        File.write(config, haproxy_config(port, upstream, server_options, backend, check_ms, mode, check))
        log = File.join(dir, "haproxy.out")
        pid = Process.spawn(BINARY, "-db", "-f", config, out: log, err: log)
        (@haproxy_pids ||= []) << pid
        up = wait_until(timeout: 15) { haproxy_exited?(pid) || accepts?(port) }
        return port if up && !haproxy_exited?(pid)

        stop_haproxy(pid)
        # Another process took the port between our probe and HAProxy's bind: try another.
        next if File.read(log).match?(/cannot bind socket|Address already in use/)

        raise "haproxy did not start:\n#{File.read(log)}"
      end
      raise "haproxy found no free port in 3 tries"
    end

    # The backend server's row of HAProxy's statistics, as a Hash of CSV column to value
    # (`server`: its name; "BACKEND" for the backend's totals).
    def haproxy_server_stats(port, server = "catamount")
      csv = Net::HTTP.start("127.0.0.1", port, open_timeout: 10, read_timeout: 10) do |http|
        http.get("#{STATS_PATH};csv").body
      end
      header, *rows = csv.lines.map(&:chomp)
      names = header.delete_prefix("# ").split(",")
      row = rows.map { |r| names.zip(r.split(",", -1)).to_h }.find { |r| r["pxname"] == "be" && r["svname"] == server }
      row or raise "no backend server row in HAProxy's statistics:\n#{csv}"
    end

    # HAProxy's log lines (httplog, one per request) for the backend that are not a 200 ended
    # normally (termination state `----`), and any line about the server's state (a check that
    # failed, the server down): what went wrong, for a message. The statistics requests and
    # start_haproxy's probe (a connection closed unused) are not the backend's.
    def haproxy_log_problems(dir)
      File.read(File.join(dir, "haproxy.out")).lines.select do |l|
        (l.include?(" fe be/") && !l.match?(/ 200 \d+ - - ---- /)) || l.match?(%r{Server be/|server available|Health check})
      end
    end

    # Waits (bounded) until HAProxy's health check sees the server UP; returns the row.
    def wait_for_haproxy_up(port, timeout: 15, server: "catamount")
      row = nil
      up = wait_until(timeout: timeout) do
        row = haproxy_server_stats(port, server)
        row["status"] == "UP" && row["check_status"] == "L7OK"
      end
      assert up, "HAProxy never saw the server UP: #{row.inspect}"
      row
    end

    def teardown
      (@haproxy_pids || []).dup.each { |pid| stop_haproxy(pid) }
      super
    end

    private

    def haproxy_config(port, upstream, server_options, backend, check_ms, mode, check)
      address = upstream.is_a?(Integer) ? "127.0.0.1:#{upstream}" : upstream
      servers = upstream.is_a?(Array) ? upstream : ["catamount #{address} check inter #{check_ms} #{server_options}"]
      ipv6 = Haproxy.ipv6? ? "  bind [::1]:#{port}\n" : ""
      http = mode == "http"
      <<~CONF
        global
          maxconn 512
          log stdout format raw local0 info
        defaults
          mode #{mode}
          log global
          option #{http ? 'httplog' : 'tcplog'}
          timeout connect 5s
          timeout client 30s
          timeout server 30s
          timeout http-keep-alive 10s
          # A check waits for its answer as a request does (by default it would give up after
          # `inter`, so a hot restart's boot, connections waiting in the backlog, would mark
          # the server down).
          timeout check 10s
        frontend fe
          bind 127.0.0.1:#{port}
        #{ipv6}#{http ? "  stats enable\n  stats uri #{STATS_PATH}\n" : ''}  default_backend be
        backend be
        #{http ? "  option httpchk #{check}\n  http-reuse always\n" : ''}        #{backend.map { |l| "  #{l}\n" }.join}#{servers.map { |l| "  server #{l}" }.join("\n")}
      CONF
    end

    def haproxy_exited?(pid)
      front_exited?(@haproxy_pids, pid)
    end

    def stop_haproxy(pid)
      stop_front(@haproxy_pids, pid)
    end
  end
end
