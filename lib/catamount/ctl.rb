# frozen_string_literal: true

require "rbconfig"

module Catamount
  # What catamountctl (exe/catamountctl) needs Ruby for: reading a config file, and the command
  # that runs the server for `start`. Loaded only when one of them is needed.
  module Ctl
    # The config file's state path, control URL, token and pidfile (Puma's option names),
    # evaluated as the server would (its DSL, its checks) but without loading any app.
    def self.read_config(path, environment)
      require "catamount/version"
      require "catamount/configuration"
      require "catamount/dsl"
      require "catamount/plugin"
      require "catamount/puma_compat"
      cli = Native.parse_cli(["-C", path, "-e", environment])
      Configuration.load(cli).options.slice(:state, :control_url, :control_auth_token, :pidfile)
    end

    # `catamount` with `args`: the one beside this program (bin/ in a checkout, the gem's
    # binstub once installed), else the gem's own executable.
    def self.server_command(args)
      program = File.join(File.dirname(File.expand_path($PROGRAM_NAME)), "catamount")
      return [RbConfig.ruby, program, *args] if File.file?(program)

      [RbConfig.ruby, "-I", File.expand_path("..", __dir__), File.expand_path("../../exe/catamount", __dir__), *args]
    end
  end
end
