# frozen_string_literal: true

require "front_process"

module Support
  # Debian's nginx in front of a test's server: its own config in a temp dir, a free loopback
  # port, run in the foreground (one process: its PID is the one spawned, killed by PID after
  # the test), every wait bounded. Include beside Support::ServerTest.
  module Nginx
    include FrontProcess
    BINARY = ["/usr/sbin/nginx", "nginx"].find { |b| b.include?("/") ? File.executable?(b) : true }

    # Starts nginx proxying every path to 127.0.0.1:`upstream` over HTTP/1.1 keep-alive
    # connections (at most `keepalive` idle ones kept); returns its port.
    def start_nginx(dir, upstream, keepalive: 1)
      3.times do
        port = free_port # nginx cannot be told to pick a port and say which
        config = File.join(dir, "nginx.conf")
        File.write(config, nginx_config(dir, port, upstream, keepalive))
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

    def teardown
      (@nginx_pids || []).dup.each { |pid| stop_nginx(pid) }
      super
    end

    private

    def nginx_config(dir, port, upstream, keepalive)
      <<~CONF
        daemon off;
        master_process off;
        worker_processes 1;
        pid #{dir}/nginx.pid;
        error_log #{dir}/error.log warn;
        events { worker_connections 512; }
        http {
          access_log off;
          client_body_temp_path #{dir}/client_body;
          proxy_temp_path #{dir}/proxy;
          fastcgi_temp_path #{dir}/fastcgi;
          uwsgi_temp_path #{dir}/uwsgi;
          scgi_temp_path #{dir}/scgi;
          upstream catamount {
            server 127.0.0.1:#{upstream};
            keepalive #{keepalive};
          }
          server {
            listen 127.0.0.1:#{port};
            location / {
              proxy_pass http://catamount;
              proxy_http_version 1.1;
              proxy_set_header Connection "";
              proxy_read_timeout 10s;
            }
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
