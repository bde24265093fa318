# frozen_string_literal: true

require "etc"

module Bench
  # Where the servers and the load run (`--mode`): "shared" (both anywhere on the machine, in the
  # bench's session), "taskset" (the server and its children confined to CPU 0, wrk and the other
  # clients to CPU 1: how most containers run) or "setsid" (the server in a session of its own, so
  # Linux's autogroup scheduling gives it and the bench's session, wrk's, equal CPU shares, as two
  # separate services get). docs/benchmarks.md says how each changes the ratios.
  module Placement
    MODES = {
      "shared" => "server and wrk share both CPUs, one session",
      "taskset" => "server pinned to CPU 0, wrk to CPU 1 (taskset -c)",
      "setsid" => "server in its own session (setsid: its own autogroup)"
    }.freeze

    class << self
      attr_reader :mode

      def mode=(name)
        raise ArgumentError, "--mode must be one of #{MODES.keys.join(', ')}" unless MODES.key?(name)
        raise ArgumentError, "--mode taskset needs two CPUs (this machine has #{Etc.nprocessors})" \
          if name == "taskset" && Etc.nprocessors < 2

        @mode = name
      end

      def description
        text = MODES.fetch(@mode)
        return text unless @mode == "setsid"

        enabled = File.read("/proc/sys/kernel/sched_autogroup_enabled").strip == "1" rescue false
        enabled ? text : "#{text}; autogroup is OFF on this kernel, so this is the shared mode"
      end

      # The command line that starts a server (or the app-alone loop, its stand-in).
      def server(command)
        case @mode
        when "taskset" then ["taskset", "-c", "0", *command]
        # Spawned without a process group of its own, setsid(1) calls setsid() and execs in place:
        # the PID is the server's, and the new session is also its process group.
        when "setsid" then ["setsid", *command]
        else command
        end
      end

      # Whether the server gets a process group from spawn (setsid makes its own).
      def spawn_pgroup?
        @mode != "setsid"
      end

      # The command line of a load tool (wrk, the slow clients).
      def client(command)
        @mode == "taskset" ? ["taskset", "-c", "1", *command] : command
      end
    end

    self.mode = "shared"
  end
end
