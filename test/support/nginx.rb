# frozen_string_literal: true

require "front_process"

module Support
  # Debian's nginx in front of a test's server: its own config in a temp dir, a free loopback
  # port, run in the foreground (one process: its PID is the one spawned, killed by PID after
  # the test), every wait bounded. Include beside Support::ServerTest.
  module Nginx
    include FrontProcess
    BINARY = ["/usr/sbin/nginx", "nginx"].find { |b| b.include?("/") ? File.executable?(b) : true }
    # Debian builds the stream module (TCP proxying, PROXY protocol to upstreams) as a dynamic
    # module, packaged as libnginx-mod-stream (script/bootstrap installs it).
    STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
    # What a deployment sets for the app to know the client (docs/deployment.md): the client's
    # address replaces any X-Forwarded-For the client sent (Catamount takes the first address).
    FORWARDED = [
      "proxy_set_header Host $http_host;",
      "proxy_set_header X-Forwarded-For $remote_addr;",
      "proxy_set_header X-Real-IP $remote_addr;",
      "proxy_set_header X-Forwarded-Proto $scheme;"
    ].freeze

    # Starts nginx proxying every path to `upstream` (a port on 127.0.0.1, or a UNIX socket's
    # path) over HTTP/1.1 keep-alive connections (at most `keepalive` idle ones kept), with
    # `location` lines added (FORWARDED...); returns its port. With `tls` nginx's port speaks
    # HTTPS with dir's cert.pem and key.pem (Support::Certificates). With `stream` it relays
    # TCP (its stream module) and sends a PROXY v1 line first on each upstream connection.
    # Its access log (access.log) has one line a request: its status, then the upstream's.
    def start_nginx(dir, upstream, keepalive: 1, location: [], tls: false, stream: false)
      3.times do
        port = free_port # nginx cannot be told to pick a port and say which
        config = File.join(dir, "nginx.conf")
        body = stream ? stream_config(port, upstream) : http_config(dir, port, upstream, keepalive, location, tls)
        File.write(config, nginx_config(dir, body, stream))
        log = File.join(dir, "nginx.out")
        pid = Process.spawn(BINARY, "-p", dir, "-c", config, "-e", File.join(dir, "error.log"), out: log, err: log)
        (@nginx_pids ||= []) << pid
        up = wait_until(timeout: 15) { nginx_exited?(pid) || accepts?(port) }
        return port if up && !nginx_exited?(pid)

        stop_nginx(pid)
        # Another process took the port between our probe and nginx's bind: try another.
        next if File.read(File.join(dir, "error.log")).include?("Address already in use")

        raise "nginx did not start:\n#{File.read(log)}\n#{File.read(File.join(dir, 'error.log'))}"
      end
      raise "nginx found no free port in 3 tries"
    end

    # nginx's error_log lines about its upstream (a connection refused, reset or closed before
    # the answer, which nginx then retries on another connection) and access log lines whose
    # status or upstream status is not a plain 200: what went wrong, for a message.
    def nginx_upstream_problems(dir)
      errors = File.read(File.join(dir, "error.log")).lines.grep(/upstream|connect\(\) failed|recv\(\) failed|send\(\) failed/)
      access = File.exist?(File.join(dir, "access.log")) ? File.read(File.join(dir, "access.log")).lines : []
      errors + access.reject { |l| l.start_with?("200 200 ") }
    end

    def teardown
      (@nginx_pids || []).dup.each { |pid| stop_nginx(pid) }
      super
    end

    private

    def nginx_config(dir, body, stream)
      <<~CONF
        #{stream ? "load_module #{STREAM_MODULE};" : ''}
        daemon off;
        master_process off;
        worker_processes 1;
        pid #{dir}/nginx.pid;
        error_log #{dir}/error.log warn;
        events { worker_connections 512; }
        #{body}
      CONF
    end

    def http_config(dir, port, upstream, keepalive, location, tls)
      address = upstream.is_a?(Integer) ? "127.0.0.1:#{upstream}" : "unix:#{upstream}"
      tls_lines = tls ? "ssl_certificate #{dir}/cert.pem;\n    ssl_certificate_key #{dir}/key.pem;" : ""
      <<~CONF
        http {
          log_format upstream '$status $upstream_status "$request" $upstream_addr';
          access_log #{dir}/access.log upstream;
          client_body_temp_path #{dir}/client_body;
          proxy_temp_path #{dir}/proxy;
          fastcgi_temp_path #{dir}/fastcgi;
          uwsgi_temp_path #{dir}/uwsgi;
          scgi_temp_path #{dir}/scgi;
          upstream catamount {
            server #{address};
            keepalive #{keepalive};
          }
          server {
            listen 127.0.0.1:#{port}#{tls ? ' ssl' : ''};
            #{tls_lines}
            location / {
              proxy_pass http://catamount;
              proxy_http_version 1.1;
              proxy_set_header Connection "";
              #{location.join("\n      ")}
              proxy_read_timeout 10s;
            }
          }
        }
      CONF
    end

    def stream_config(port, upstream)
      address = upstream.is_a?(Integer) ? "127.0.0.1:#{upstream}" : "unix:#{upstream}"
      <<~CONF
        stream {
          server {
            listen 127.0.0.1:#{port};
            proxy_pass #{address};
            proxy_protocol on;
            proxy_timeout 10s;
          }
        }
      CONF
    end

    def nginx_exited?(pid)
      front_exited?(@nginx_pids, pid)
    end

    def stop_nginx(pid)
      stop_front(@nginx_pids, pid)
    end
  end
end
