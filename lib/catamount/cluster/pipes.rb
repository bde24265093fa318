# frozen_string_literal: true

module Catamount
  module Cluster
    # The pipes between a master and its workers, and what goes over them.
    #
    # - messages (workers write, the master reads), a line per message: `b<pid>:<index>` when
    #   booted, `p<pid>{json}` with the worker's pool stats right after and then every
    #   `worker_check_interval`, `i<pid>:1` / `i<pid>:0` when it became idle for `idle_timeout`
    #   / busy again, `f<pid>:<index>` first from a worker worker 0 forked; `!` wakes the master
    #   (its signal traps write it).
    # - alive: workers hold the read end, the master writes nothing; when the master dies it
    #   closes, and the workers stop at once.
    # - fork (`fork_worker` and template mode; the master writes, worker 0 reads), a command a
    #   line: `-1` stop serving (run `before_refork` if it was serving), `<n>` fork worker n,
    #   `0` serve (again), `-2` a refork cycle ended (run `after_refork`).
    class Pipes
      # Names the master and the pipes (messages, alive, fork) of the cluster a fresh worker 0
      # joins: "<master pid>,<fd>,<fd>,<fd>".
      FRESH_WORKER_VAR = "CATAMOUNT_CLUSTER_WORKER"

      attr_accessor :messages_r, :messages_w, :alive_r, :alive_w, :fork_r, :fork_w

      def self.open
        pipes = new
        pipes.messages_r, pipes.messages_w = IO.pipe
        pipes.alive_r, pipes.alive_w = IO.pipe
        pipes
      end

      # A fresh worker 0's pipes, from FRESH_WORKER_VAR (removed): `[master_pid, pipes]`, or nil
      # when the variable is malformed.
      def self.from_env
        master, *fds = ENV.delete(FRESH_WORKER_VAR).to_s.split(",").map { |n| Integer(n, 10, exception: false) }
        return unless master && fds.size == 3 && fds.all?

        pipes = new
        pipes.messages_w, pipes.alive_r, pipes.fork_r = fds.map do |fd|
          IO.for_fd(fd, autoclose: true).tap do |io|
            io.close_on_exec = true
            io.sync = true # a message is a line written at once, as through IO.pipe's end
          end
        end
        [master, pipes]
      end

      # The value of FRESH_WORKER_VAR for a new worker 0, and the descriptors it must inherit.
      def for_fresh_worker(master_pid)
        ends = [@messages_w, @alive_r, @fork_r]
        [[master_pid, *ends.map(&:fileno)].join(","), ends.map(&:fileno)]
      end

      # A new fork pipe for a new worker 0 (template mode).
      def renew_fork_pipe
        close_fork_pipe
        @fork_r, @fork_w = IO.pipe
      end

      # The master keeps only the write end once worker 0 has the read end.
      def forked_template
        @fork_r&.close
        @fork_r = nil
      end

      def close_fork_pipe
        @fork_r&.close
        @fork_w&.close
      end

      # In a new worker: the master's ends closed; the fork pipe kept only by the template.
      def in_worker(template:)
        @alive_w&.close
        @messages_r&.close
        @fork_w&.close
        @fork_r&.close unless template
      end

      # A line to the master (its worker may be gone: the caller handles IOError/EPIPE).
      def tell_master(line)
        @messages_w.write("#{line}\n")
      end

      # Wakes the master's loop (from a signal trap: never blocks).
      def wake_master
        @messages_w.write_nonblock("!\n", exception: false)
      end

      # Command lines to worker 0. A worker 0 gone away is reaped and replaced by the master's
      # loop; its unread commands die with its pipe.
      def command_template(*lines)
        @fork_w&.write_nonblock(lines.map { |l| "#{l}\n" }.join, exception: false)
      rescue IOError, SystemCallError
        nil
      end
    end
  end
end
