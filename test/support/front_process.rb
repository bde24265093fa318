# frozen_string_literal: true

require "socket"

module Support
  # What test/support/nginx.rb and haproxy.rb share about the proxy process they spawn in
  # front of a server: whether its port accepts yet, and reaping or killing it by PID (only
  # while it is ours: `pids` lists the live ones this test spawned).
  module FrontProcess
    private

    def accepts?(port)
      Socket.tcp("127.0.0.1", port, connect_timeout: 1).close
      true
    rescue SystemCallError
      false
    end

    # Reaps it if it ended (then it is no longer ours to kill: its PID may be reused).
    def front_exited?(pids, pid)
      return true unless pids.include?(pid)
      return false if Process.waitpid(pid, Process::WNOHANG).nil?

      pids.delete(pid)
      true
    end

    def stop_front(pids, pid)
      return if front_exited?(pids, pid)

      Process.kill("KILL", pid)
      Process.waitpid(pid)
      pids.delete(pid)
    end
  end
end
