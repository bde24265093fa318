# frozen_string_literal: true

require "etc"

# What the fault tests (test/test_faults_*.rb) read about a server process from /proc, and the
# one line each of them prints with its counts.
module Support
  module Faults
    # The number of TCP connections (not listeners) process `pid` holds open: for a stopped
    # worker, the requests it had accepted and can no longer answer.
    def client_connections(pid)
      inodes = Dir.glob("/proc/#{pid}/fd/*").filter_map do |fd|
        File.readlink(fd)[/\Asocket:\[(\d+)\]\z/, 1]
      rescue SystemCallError
        nil
      end
      states = %w[tcp tcp6].flat_map do |table|
        File.readlines("/proc/#{pid}/net/#{table}").drop(1).map { |l| f = l.split; [f[9], f[3]] }
      rescue SystemCallError
        []
      end.to_h
      inodes.count { |inode| states.key?(inode) && states[inode] != "0A" } # 0A: LISTEN
    end

    # Waits until `pid` is stopped by a signal (state T), bounded.
    def wait_stopped(pid)
      assert wait_until { File.read("/proc/#{pid}/stat")[/\) (\w)/, 1] == "T" }, "#{pid} did not stop"
    end

    # CPU seconds (user + system) `pid` has used.
    def cpu_seconds(pid)
      fields = File.read("/proc/#{pid}/stat").split(") ", 2).last.split
      (fields[11].to_i + fields[12].to_i) / Float(Etc.sysconf(Etc::SC_CLK_TCK))
    end

    # Resident memory of `pid` in KiB.
    def rss_kib(pid)
      File.read("/proc/#{pid}/status")[/^VmRSS:\s+(\d+)/, 1].to_i
    end

    # The line every fault test prints: what was sent, answered and failed, and why that is
    # within bounds.
    def report(name, sent:, answered:, failed:, note: nil)
      puts "faults: #{name}: sent #{sent} answered #{answered} failed #{failed}#{" (#{note})" if note}"
    end

    # A socket whose close sends a reset (SO_LINGER 0) instead of a FIN.
    def reset!(sock)
      sock.setsockopt(Socket::SOL_SOCKET, Socket::SO_LINGER, [1, 0].pack("ii"))
      sock.close
    end
  end
end
