# frozen_string_literal: true

require "catamount"

module Catamount
  # The Rack handler behind `rackup -s catamount` and `rails server -u catamount`: the methods
  # of `Rack::Handler::Catamount` (lib/rack/handler/catamount.rb, Rack 2's registry) and of
  # `Rackup::Handler::Catamount` (lib/rackup/handler/catamount.rb, Rack 3's), which extend this
  # module (their names end in Catamount: Rails' boot line shows it). It turns the options Hash
  # those commands pass into a boot of the usual launcher, with the precedence Puma's handler
  # gives them: what the user typed beats config/puma.rb, which beats the command's defaults.
  module RackHandler
    # Puma's, for a host without a port or a port without a host.
    DEFAULT_HOST = "0.0.0.0"
    DEFAULT_PORT = 9292

    # What an options Hash asks of a boot. `argv`: the user's choices as Catamount flags (the
    # command-line layer). `presets`: settings recorded before the config files (the host their
    # `port` binds). `fallbacks`: `[key, setting, args]` recorded after them, each only when the
    # files set nothing under `key` (the command's defaults). `environment`: the one to find
    # config/puma/<env>.rb by when the user named none.
    Plan = Struct.new(:argv, :presets, :fallbacks, :environment, :verbose, keyword_init: true)

    # Starts the server and returns when it has stopped. A boot that fails (its reason already
    # printed) exits non-zero; a SIGTERM stop ends the process by SIGTERM after `ensure` blocks
    # and `at_exit` handlers ran (rackup's and Rails' pid files).
    def run(app, **options)
      plan = plan(options)
      if plan.verbose
        require "rack/common_logger"
        app = ::Rack::CommonLogger.new(app, $stdout)
      end
      launcher = Launcher.new(plan.argv, handler: Launcher::Handled.new(app, plan, own_command))
      yield launcher if block_given?
      status = launcher.run
      exit(status) unless status == Launcher::OK
      status
    end

    # Shown by `rackup -s catamount -h` (rackup leaves out Host and Port: it has its own flags).
    def valid_options
      {
        "Host=HOST" => "Hostname to listen on (default: localhost)",
        "Port=PORT" => "Port to listen on (default: #{DEFAULT_PORT})",
        "Threads=MIN:MAX" => "min:max threads to use (default 0:5)",
        "Verbose" => "Log each request to stdout (default: false)",
        "Silent" => "Print no boot or stop lines (default: false)"
      }
    end

    # Pure: the plan for an options Hash. With `user_supplied_options` (Rails) only the keys it
    # lists are the user's and the rest are defaults; without it (rackup) every key is the user's.
    def plan(options)
      user = options.dup
      defaults = {}
      if (supplied = user.delete(:user_supplied_options))
        (user.keys - supplied).each { |key| defaults[key] = user.delete(key) }
      end
      Plan.new(argv: user_argv(user, defaults), presets: presets(defaults), fallbacks: fallbacks(defaults),
               environment: defaults[:environment]&.to_s, verbose: user[:Verbose] ? true : false)
    end

    # A listener URL from a handler's Host and Port, as Puma's handler reads them: a host that
    # is a path is a UNIX socket, an `ssl://` host keeps its query and gets the port if it has
    # none; else TCP (an IPv6 address in brackets).
    def bind_url(host, port)
      host = host&.to_s
      return "unix://#{host}" if host&.start_with?(".", "/")

      if host&.start_with?("ssl://")
        require "uri"
        uri = URI.parse(host)
        uri.port ||= Integer(port || DEFAULT_PORT)
        return uri.to_s
      end
      host ||= DEFAULT_HOST
      host = "[#{host}]" if host.include?(":") && !host.start_with?("[")
      "tcp://#{host}:#{Integer(port || DEFAULT_PORT)}"
    end

    private

    def user_argv(user, defaults)
      argv = []
      argv.push("--environment", user[:environment].to_s) if user[:environment]
      argv.push("--threads", user[:Threads].to_s) if user[:Threads]
      argv.push("--bind", bind_url(user[:Host] || defaults[:Host], user[:Port] || defaults[:Port])) if user[:Host] || user[:Port]
      argv.push("--restart-cmd", user[:restart_cmd].to_s) if user[:restart_cmd]
      { Silent: "--silent", early_hints: "--early-hints", debug: "--debug" }.each do |key, flag|
        argv << flag if user[key]
      end
      argv
    end

    def presets(defaults)
      defaults[:Host] ? [["set_default_host", [defaults[:Host].to_s]]] : []
    end

    def fallbacks(defaults)
      list = []
      list << [:binds, "bind", [bind_url(defaults[:Host], defaults[:Port])]] if defaults[:Host] || defaults[:Port]
      list << [:environment, "environment", [defaults[:environment].to_s]] if defaults[:environment]
      list << [:restart_cmd, "restart_command", [defaults[:restart_cmd].to_s]] if defaults[:restart_cmd]
      list << [:early_hints, "early_hints", [true]] if defaults[:early_hints]
      list
    end

    # The command that started this process, exactly (a hot restart runs it again): rackup has
    # consumed ARGV by the time a handler runs.
    def own_command
      File.binread("/proc/self/cmdline").split("\0")
    rescue SystemCallError
      nil
    end

    extend self
  end
end
