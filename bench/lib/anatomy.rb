# frozen_string_literal: true

require "open3"
require "socket"

module Bench
  # What one request costs the server, counted rather than timed (stable on a noisy machine):
  # Ruby objects allocated, system calls, and context switches per request, for sequential
  # keep-alive hello-world requests on one connection (`-t 1:1`, `wrk -c1`).
  module Anatomy
    module_function

    def measure(server, seconds)
      before = allocated(server)
      switches_before = context_switches(server.pid)
      run = Wrk.run(server.url("/"), connections: 1, seconds: seconds)
      switches_after = context_switches(server.pid)
      after = allocated(server)
      probe_cost = allocated(server) - after # one /__alloc request, counted like the others
      n = run.requests.to_f
      {
        requests: run.requests,
        objects_per_request: ((after - before - probe_cost) / n).round(1),
        context_switches_per_request: ((switches_after - switches_before) / n).round(2),
        syscalls_per_request: syscalls(server, seconds)
      }
    end

    def allocated(server)
      Socket.tcp("127.0.0.1", server.port, connect_timeout: 2) do |sock|
        sock.write("GET /__alloc HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = +""
        begin
          data << sock.readpartial(4096) while sock.wait_readable(5)
        rescue EOFError
          nil
        end
        data[/\r\n\r\n(\d+)\z/, 1].to_i
      end
    end

    def context_switches(pid)
      Dir.glob("/proc/#{pid}/task/*/status").sum do |f|
        File.read(f).scan(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)/).flatten.sum(&:to_i)
      rescue Errno::ENOENT
        0
      end
    end

    # System calls by name per request, counted by strace attached to every thread during a
    # separate run (strace slows the server down; the counts stay exact).
    def syscalls(server, seconds)
      out = File.join(Dir.tmpdir, "catamount-bench-strace-#{server.pid}.txt")
      tracer = Process.spawn("strace", "-f", "-c", "-o", out, "-p", server.pid.to_s, err: File::NULL)
      sleep 1 # strace attaches to each thread
      run = Wrk.run(server.url("/"), connections: 1, seconds: seconds)
      Process.kill("INT", tracer)
      Process.wait(tracer)
      counts = File.read(out).scan(/^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$/).to_h { |c, name| [name, c.to_i] }
      counts.delete("total")
      counts.transform_values { |c| (c / run.requests.to_f).round(2) }.select { |_, v| v >= 0.01 }
    rescue Errno::ENOENT
      {}
    ensure
      File.delete(out) if out && File.exist?(out)
    end
  end
end
