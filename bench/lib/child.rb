# frozen_string_literal: true

module Bench
  # A child process the bench started in a process group of its own (a server under test, the
  # bench's PostgreSQL): whether it has exited, and a bounded stop. Needs @pid; keeps @status.
  module Child
    # `signal` to the child, then (after `seconds`) KILL to its whole process group.
    def stop_child(signal, seconds)
      return if exited?

      Process.kill(signal, @pid)
      deadline = now + seconds
      sleep 0.05 until exited? || now > deadline
      return if exited?

      Process.kill("KILL", -@pid)
      Process.wait(@pid)
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    end

    def exited?
      return true if @status

      _, @status = Process.waitpid2(@pid, Process::WNOHANG)
      !@status.nil?
    rescue Errno::ECHILD
      true
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
