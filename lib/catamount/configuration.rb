# frozen_string_literal: true

module Catamount
  # Everything a boot is configured with: the resolved native options (CLI over config files
  # over defaults), and the Ruby objects config files hand over (hooks, handlers, loggers, an
  # inline app, plugins). `Catamount.config` is this object once booted; `options` is a Hash
  # under Puma's option names.
  class Configuration
    # Every lifecycle hook, with Puma's older names (both work) and where it applies.
    # `cluster:` hooks only run in cluster mode; `key:` hooks may take a key naming a Hash shared
    # by that key's hooks for the life of the worker.
    HOOKS = {
      before_fork: { aliases: [], cluster: true },
      before_worker_fork: { aliases: %i[on_worker_fork], cluster: true },
      after_worker_fork: { aliases: %i[after_worker_boot], cluster: true },
      before_worker_boot: { aliases: %i[on_worker_boot], cluster: true, key: true },
      before_worker_shutdown: { aliases: %i[on_worker_shutdown], cluster: true, key: true },
      after_worker_shutdown: { aliases: [], cluster: true },
      before_refork: { aliases: %i[on_refork], cluster: true, key: true },
      after_refork: { aliases: [], cluster: true, key: true },
      before_restart: { aliases: %i[on_restart] },
      after_booted: { aliases: %i[on_booted] },
      after_stopped: { aliases: %i[on_stopped] },
      before_thread_start: { aliases: %i[on_thread_start] },
      before_thread_exit: { aliases: %i[on_thread_exit] },
      out_of_band: { aliases: [] }
    }.freeze

    Hook = Struct.new(:block, :key, :where)

    attr_reader :cli, :settings, :files, :hooks, :mode_blocks, :plugins, :native
    attr_accessor :app, :lowlevel_error_handler, :custom_logger, :log_formatter

    # Reads the config files the command line names (or finds), then resolves every option.
    # `handled`: a `RackHandler::Plan` when a Rack handler boots the server: its presets come
    # before the files and its fallbacks after them, each only if the files set nothing there.
    def self.load(cli, handled: nil)
      config = new(cli)
      config.load_flag_plugins
      handled&.presets&.each { |name, args| config.record(name, args, HANDLER_WHERE) }
      config.config_files(handled&.environment).each { |file| config.evaluate_file(File.expand_path(file)) }
      handled&.fallbacks&.each do |key, name, args|
        config.record(name, args, HANDLER_WHERE) unless Native.given_values(config.settings).key?(key)
      end
      config.resolve!
      config
    end

    # Where a Rack handler's settings say they came from, in errors.
    HANDLER_WHERE = "the Rack handler's options"

    def initialize(cli)
      @cli = cli
      @settings = []
      @files = []
      @hooks = Hash.new { |h, k| h[k] = [] }
      @mode_blocks = []
      @plugins = []
    end

    # `-C` files in order; else the first of config/puma/<env>.rb and config/puma.rb (`<env>`
    # from the command line, else a Rack handler's default, else the environment variables).
    def config_files(default_environment = nil)
      return [] if cli.no_config?

      files = cli.config_files
      files.each { |f| raise ConfigError, "config file #{f} not found" unless File.file?(f) }
      return files unless files.empty?

      env = cli.environment || default_environment || %w[APP_ENV RACK_ENV RAILS_ENV].map { |k| ENV[k] }.find { |v| v && !v.empty? } || "development"
      ["config/puma/#{env}.rb", "config/puma.rb"].select { |f| File.file?(f) }.first(1)
    end

    def evaluate_file(path)
      @files << path unless @files.include?(path)
      DSL.new(self, path).evaluate
    end

    def record(name, args, where)
      @settings << [name, args, where]
    end

    def add_hook(name, block, key:, where:)
      @hooks[name] << Hook.new(block, key, where)
    end

    # Resolves the options; then runs the `single`/`cluster` blocks for the mode the worker
    # count picks, and resolves again with what they set.
    def resolve!
      @native = cli.resolve(@settings)
      return if @mode_blocks.empty?

      mode = @native.to_h[:workers].positive? ? :cluster : :single
      workers_before = @native.to_h[:workers]
      @mode_blocks.each do |kind, block, where|
        next unless kind == mode

        DSL.new(self, where.split(":").first).evaluate_block(block)
      end
      @native = cli.resolve(@settings)
      return if @native.to_h[:workers] == workers_before

      raise ConfigError, "#{@mode_blocks.first[2]}: a #{mode} block cannot change the number of workers"
    end

    # Puma-named options (Symbol keys).
    def options
      @options ||= @native.to_h
    end

    def [](key)
      options[key.to_sym]
    end

    def cluster?
      options[:workers].positive?
    end

    # Hooks defined for a mode they will not run in: names, for a warning.
    def idle_cluster_hooks
      return [] if cluster?

      @hooks.keys.select { |name| HOOKS.fetch(name)[:cluster] && !@hooks[name].empty? }
    end

    # Runs every hook called `name` with `args`; a hook defined with a key also gets that key's
    # Hash from `keyed` (shared by the key's hooks for the life of a worker). A hook that raises
    # is reported on stderr and the others still run, as in Puma: a broken hook must not take
    # the server down.
    def run_hooks(name, *args, log: $stderr, keyed: nil)
      @hooks[name].each do |hook|
        hook.block.call(*args, *([keyed[hook.key]] if hook.key && keyed))
      rescue StandardError, ScriptError => e
        log.puts "WARNING hook #{name} (#{hook.where}) failed with exception (#{e.class}) #{e.message}"
      end
    end

    # `--plugin NAME` (repeatable): loaded before the config files, as Puma orders them.
    def load_flag_plugins
      cli.resolve([]).to_h[:plugins].each do |name|
        load_plugin(name, "--plugin #{name}", DSL.new(self, "--plugin"))
      end
    end

    def load_plugin(name, where, dsl)
      plugin = Plugins.load(name, where)
      return if @plugins.any? { |p| p.class == plugin.class }

      @plugins << plugin
      dsl.evaluate_block(proc { |d = self| plugin.config(d) }) if plugin.respond_to?(:config)
    end
  end
end
