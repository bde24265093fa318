# frozen_string_literal: true

module Catamount
  module Plugins
    # `plugin :tmp_restart`: a newer modification time on tmp/restart.txt (what Rails'
    # `bin/rails restart` touches) triggers one hot restart, as USR2 would. The file is
    # created if missing; without a writable tmp/ the plugin does nothing, as in Puma.
    # Checked every CHECK_EVERY seconds, on the master's own loop in cluster mode.
    class TmpRestart < Plugin
      PATH = File.join("tmp", "restart.txt")
      CHECK_EVERY = 2

      def start(launcher)
        path = File.expand_path(PATH)
        File.write(path, "") unless File.exist?(path)
        seen = File.mtime(path)
        launcher.debug "tmp_restart: watching #{PATH}"
        launcher.every(CHECK_EVERY) do
          changed = begin
            File.mtime(path) > seen
          rescue SystemCallError
            false # gone: no restart asked for
          end
          next unless changed

          launcher.log "* Restarting: #{PATH} was touched"
          launcher.restart
          :done
        end
      rescue SystemCallError
        launcher.debug "tmp_restart: cannot use #{PATH} here; not watching it"
      end
    end
    register "tmp_restart", TmpRestart
  end
end
