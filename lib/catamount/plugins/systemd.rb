# frozen_string_literal: true

require "socket"

module Catamount
  module Plugins
    # `plugin :systemd`, on by itself when systemd started the server (`NOTIFY_SOCKET` set;
    # `PUMA_SKIP_SYSTEMD` turns that off), for units of `Type=notify`:
    # - `READY=1` once the server serves (after every worker booted, and again after a phased
    #   restart), `RELOADING=1` when a restart begins, `STOPPING=1` when a stop begins;
    # - `STATUS=...` every STATUS_EVERY seconds, shown by `systemctl status`;
    # - `WATCHDOG=1` every half `WATCHDOG_USEC` when the unit sets `WatchdogSec=`.
    # A socket that cannot be reached is reported once; the server runs on regardless.
    class Systemd < Plugin
      STATUS_EVERY = 1

      def start(launcher)
        @launcher = launcher
        @path = ENV["NOTIFY_SOCKET"]
        return launcher.debug("systemd: NOTIFY_SOCKET is not set; nothing to notify") unless @path

        launcher.log "* Enabling systemd notification integration"
        launcher.events.on_booted { notify("READY=1") }
        launcher.events.on_restart { notify("RELOADING=1") }
        launcher.events.on_stopped { notify("STOPPING=1") }
        launcher.every(STATUS_EVERY) { notify("STATUS=#{launcher.status_line}") }
        watchdog
      end

      private

      def watchdog
        usec = ENV["WATCHDOG_USEC"].to_i
        return unless usec.positive?
        return if ENV["WATCHDOG_PID"] && ENV["WATCHDOG_PID"].to_i != Process.pid

        every = usec / 2_000_000.0
        @launcher.log "* Pinging systemd watchdog every #{every.round(1)} sec"
        @launcher.every(every) { notify("WATCHDOG=1") }
      end

      def notify(state)
        @socket ||= connect
        @socket&.sendmsg_nonblock(state, 0, exception: false)
        nil
      rescue SystemCallError, IOError => e
        report(e)
      end

      # An `@name` path is in Linux's abstract namespace (a leading NUL byte).
      def connect
        address = @path.start_with?("@") ? "\0#{@path[1..]}" : @path
        socket = Socket.new(:UNIX, :DGRAM)
        socket.connect(Socket.sockaddr_un(address))
        socket
      rescue SystemCallError, ArgumentError => e
        socket&.close
        report(e)
      end

      def report(error)
        @launcher.error "catamount: systemd notification to #{@path} failed: #{error.message}" unless @reported
        @reported = true
        nil
      end
    end
    register "systemd", Systemd
  end
end
