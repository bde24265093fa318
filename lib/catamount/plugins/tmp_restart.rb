# frozen_string_literal: true

module Catamount
  module Plugins
    # `plugin :tmp_restart` (Rails' `bin/rails restart` touches tmp/restart.txt). Loading it always
    # works. Restarting needs hot restarts, which arrive with cluster mode; until then `start`
    # says so once, when debug is on, instead of watching a file it cannot act on.
    class TmpRestart < Plugin
      def start(launcher)
        launcher.debug "tmp_restart: restarting on touch of tmp/restart.txt arrives with hot restarts"
      end
    end
    register "tmp_restart", TmpRestart
  end
end
