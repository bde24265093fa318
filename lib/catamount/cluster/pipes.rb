# frozen_string_literal: true

require "io/wait"
require "json"

module Catamount
  module Cluster
    # The pipes between a master and its workers, and what goes over them: both sides write
    # and read through these methods only, so the wire format is known here alone
    # (test/unit/test_pipes.rb).
    #
    # - messages (workers write, the master reads), a line per message: `b<pid>:<index>` when
    #   booted, `p<pid>{json}` with the worker's pool stats right after and then every
    #   `worker_check_interval`, `i<pid>:1` / `i<pid>:0` when it became idle for `idle_timeout`
    #   / busy again, `f<pid>:<index>` first from a worker worker 0 forked, `d<pid>` once a
    #   stopping worker has something to drain (its index is free); `!` wakes the master
    #   (its signal traps write it).
    # - alive: workers hold the read end, the master writes nothing; when the master dies it
    #   closes, and the workers stop at once.
    # - restart: the same shape, a broadcast: the master closes its end when a hot restart
    #   begins (before it stops the workers), so every worker sees at once that its stop is not
    #   to drain (lib/catamount/drain.rb says why), without a signal an app could trap.
    # - fork (`fork_worker` and template mode; the master writes, worker 0 reads), a command a
    #   line: `-1` stop serving (run `before_refork` if it was serving), `p<n>` the workers
    #   forked from now on are of phase n, `<n>` fork worker n, `0` serve (again), `-2` a refork
    #   cycle ended (run `after_refork`).
    class Pipes
      # Names the master and the pipes (messages, alive, fork, restart) of the cluster a fresh
      # worker 0 joins, and its phase: "<master pid>,<fd>,<fd>,<fd>,<fd>,<phase>".
      FRESH_WORKER_VAR = "CATAMOUNT_CLUSTER_WORKER"

      # A worker's message as the master reads it: `kind` is :booted, :status, :idle, :forked
      # or :drained; `index` is set for :booted and :forked; `value` is the pool stats (:status,
      # a Hash with Symbol keys, nil when unreadable) or whether the worker is idle (:idle).
      Message = Struct.new(:kind, :pid, :index, :value)
      KINDS = { "b" => :booted, "p" => :status, "i" => :idle, "f" => :forked, "d" => :drained }.freeze

      # Template commands (fork pipe); a phase arrives as `Phase`.
      Phase = Struct.new(:number)
      STOP_SERVING = -1
      SERVE = 0
      REFORK_DONE = -2

      def self.open
        messages_r, messages_w = IO.pipe
        alive_r, alive_w = IO.pipe
        restart_r, restart_w = IO.pipe
        new(messages_r: messages_r, messages_w: messages_w, alive_r: alive_r, alive_w: alive_w,
            restart_r: restart_r, restart_w: restart_w)
      end

      # A fresh worker 0's pipes, from FRESH_WORKER_VAR (removed): `[master_pid, pipes, phase]`,
      # or nil when the variable is malformed.
      def self.from_env
        master, *fds, phase = ENV.delete(FRESH_WORKER_VAR).to_s.split(",").map { |n| Integer(n, 10, exception: false) }
        return unless master && phase && fds.size == 4 && fds.all?

        messages_w, alive_r, fork_r, restart_r = fds.map do |fd|
          IO.for_fd(fd, autoclose: true).tap do |io|
            io.close_on_exec = true
            io.sync = true # a message is a line written at once, as through IO.pipe's end
          end
        end
        [master, new(messages_w: messages_w, alive_r: alive_r, fork_r: fork_r, restart_r: restart_r), phase]
      end

      # One message line (without its newline) as a Message; nil for a wake-up (`!`) or
      # anything else.
      def self.parse(line)
        kind = KINDS[line[0]]
        return unless kind

        pid = line[1..].to_i
        rest = line[/\A.\d*(.*)\z/m, 1]
        case kind
        when :status then Message.new(kind, pid, nil, parse_stats(rest))
        when :idle then Message.new(kind, pid, nil, rest.end_with?(":1"))
        when :drained then Message.new(kind, pid)
        else Message.new(kind, pid, rest.delete_prefix(":").to_i)
        end
      end

      def self.parse_stats(json)
        JSON.parse(json, symbolize_names: true) unless json.empty?
      rescue JSON::ParserError
        nil
      end
      private_class_method :parse_stats

      def initialize(messages_r: nil, messages_w: nil, alive_r: nil, alive_w: nil, fork_r: nil, fork_w: nil,
                     restart_r: nil, restart_w: nil)
        @messages_r = messages_r
        @messages_w = messages_w
        @alive_r = alive_r
        @alive_w = alive_w
        @fork_r = fork_r
        @fork_w = fork_w
        @restart_r = restart_r
        @restart_w = restart_w
        @partial = nil
      end

      # The value of FRESH_WORKER_VAR for a new worker 0 of `phase`, and the descriptors it
      # must inherit.
      def for_fresh_worker(master_pid, phase)
        ends = [@messages_w, @alive_r, @fork_r, @restart_r]
        [[master_pid, *ends.map(&:fileno), phase].join(","), ends.map(&:fileno)]
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

      # In a new worker: the master's ends closed; the fork pipe kept only by the template.
      def in_worker(template:)
        @alive_w&.close
        @restart_w&.close
        @messages_r&.close
        @fork_w&.close
        @fork_r&.close unless template
      end

      # --- the master's side -------------------------------------------------------------------

      # The messages (Message) that arrived within `timeout` seconds; none when it ran out or
      # one of `also` (the control server's) became readable first. A read may end inside a
      # line: that part is kept for the next read.
      def read(timeout, also: nil)
        ready, = IO.select([@messages_r, *also], nil, nil, timeout)
        return [] unless ready&.include?(@messages_r)

        data = @messages_r.read_nonblock(65_536, exception: false)
        return [] unless data.is_a?(String)

        lines = "#{@partial}#{data}".split("\n", -1)
        @partial = lines.pop
        lines.filter_map { |line| Pipes.parse(line) }
      end

      # A hot restart begins: every worker (and every worker forked from now on) sees it
      # (`hot_restart?`).
      def announce_hot_restart
        @restart_w&.close
        @restart_w = nil
      end

      # Wakes the master's loop (from a signal trap: never blocks).
      def wake_master
        @messages_w.write_nonblock("!\n", exception: false)
      end

      # Tells worker 0 to serve (again).
      def template_serve
        command_template(SERVE)
      end

      # Tells worker 0 to stop serving, fork these indexes (workers of `phase`), then serve
      # again.
      def template_fork(indexes, phase)
        command_template(STOP_SERVING, "p#{phase}", *indexes, SERVE)
      end

      def template_refork_done
        command_template(REFORK_DONE)
      end

      # --- a worker's side ---------------------------------------------------------------------
      # Each writes a line to the master; its worker may be gone (the caller handles
      # IOError/EPIPE).

      def booted(index)
        tell_master("b#{Process.pid}:#{index}")
      end

      # A worker forked by worker 0 gives its pid (first thing, once its traps are in place).
      def forked(index)
        tell_master("f#{Process.pid}:#{index}")
      end

      def status(stats)
        tell_master("p#{Process.pid}#{JSON.generate(stats)}")
      end

      def idle(idle)
        tell_master("i#{Process.pid}:#{idle ? 1 : 0}")
      end

      # A worker's stop began (it accepts nothing more; its last requests and its drain,
      # drain.rb, may still take a while): the master may start its replacement now.
      def drained
        tell_master("d#{Process.pid}")
      end

      # Worker 0 in template mode: a thread pushes each command (an Integer: STOP_SERVING,
      # SERVE, REFORK_DONE or an index to fork) onto `queue` as it arrives.
      def forward_commands(queue)
        fork_r = @fork_r
        Thread.new do
          while (line = fork_r.gets)
            command = line.start_with?("p") ? Integer(line[1..], exception: false)&.then { |n| Phase.new(n) } : Integer(line, exception: false)
            queue << command if command
          end
        end
      end

      # Whether the master announced a hot restart (its end of the restart pipe closed; it never
      # writes, so the only news a read can bring is the end of the stream).
      def hot_restart?
        return false unless @restart_r

        @restart_r.read_nonblock(1, exception: false).nil?
      rescue IOError, SystemCallError
        false
      end

      # Returns once the master is gone (the alive pipe closed).
      def wait_for_master_exit
        @alive_r.read
      end

      private

      def close_fork_pipe
        @fork_r&.close
        @fork_w&.close
      end

      def tell_master(line)
        @messages_w.write("#{line}\n")
      end

      # Command lines to worker 0. A worker 0 gone away is reaped and replaced by the master's
      # loop; its unread commands die with its pipe.
      def command_template(*commands)
        @fork_w&.write_nonblock(commands.map { |c| "#{c}\n" }.join, exception: false)
      rescue IOError, SystemCallError
        nil
      end
    end
  end
end
