# frozen_string_literal: true

module Catamount
  module Plugins
    # `plugin :systemd`. Loading it always works; sd_notify (READY=1, STATUS, WATCHDOG) arrives
    # with cluster mode and restarts. Until then `start` says so when debug is on.
    class Systemd < Plugin
      def start(launcher)
        launcher.debug "systemd: sd_notify arrives with cluster mode"
      end
    end
    register "systemd", Systemd
  end
end
