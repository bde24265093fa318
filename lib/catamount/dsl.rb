# frozen_string_literal: true

module Catamount
  # Evaluates Puma-style config files (`config/puma.rb`): every method of Puma's DSL that makes
  # sense for MRI on Linux.
  #
  # Plain-valued options are recorded as `[name, args, "file:line"]`; the native side
  # (`catamount-config`) validates and applies them in order, so a config line and a CLI flag get
  # the same checks and every error names the line it came from. Ruby objects (hooks, handlers,
  # loggers, an inline app, plugins) are kept by the `Configuration` this DSL writes to.
  #
  # Options whose subsystem has not landed yet (none today) would be
  # validated and stored like the rest; the launcher refuses to boot when a configuration
  # actually asks for one, never ignoring it.
  class DSL
    # Methods with plain values, applied by the native layer: they come from the option
    # definitions (the `options!` table in crates/catamount-config/src/options/mod.rs, with each
    # one's validation, default and example). `plugin` is among them, but is defined below (it
    # also loads the plugin). They are defined at the end of this class, which refuses a name
    # some method here already has.
    OPTIONS = (Native.dsl_options.map(&:to_sym) - [:plugin]).freeze

    def initialize(config, path)
      @config = config
      @path = File.expand_path(path)
    end

    # Evaluates the file; any error becomes a ConfigError naming file:line.
    def evaluate
      source = begin
        File.read(@path)
      rescue SystemCallError => e
        raise ConfigError, "#{@path}: cannot read config file (#{e.message.sub(/ @ .*/, '')})"
      end
      guard { instance_eval(source, @path, 1) }
    end

    # Runs a `single`/`cluster` block (or a plugin's `config`) in this DSL, with the same error
    # handling as a file.
    def evaluate_block(block)
      guard { instance_eval(&block) }
    end

    # What the config files set so far, under Puma's option keys (`threads` sets `min_threads`
    # and `max_threads`, `quiet` sets `log_requests`): the native side applies the settings
    # recorded so far and exports the options they set.
    def get(key, default = nil)
      value = Native.given_values(@config.settings)[key.to_sym]
      value.nil? ? default : value
    end

    # The host `port` binds without one of its own.
    def default_host
      get(:default_host, "0.0.0.0")
    end

    # Evaluates the block in this DSL (used by plugins and helpers).
    def inject(&block)
      raise ArgumentError, "inject needs a block" unless block

      instance_eval(&block)
    end

    # Evaluates another config file now, relative to the working directory. (Puma queues the
    # file and, in practice, never reads it; here it is read at once.)
    def load(file)
      raise ArgumentError, "load needs a file name, got #{file.inspect}" unless file.is_a?(String)

      path = File.expand_path(file)
      raise ConfigError, "#{call_site}: load: config file #{file} not found" unless File.file?(path)

      @config.evaluate_file(path)
    end

    # An app defined in the config file instead of a rackup file.
    def app(obj = nil, &block)
      obj ||= block
      raise ArgumentError, "app needs an object that responds to #call, or a block" unless obj.respond_to?(:call)

      @config.app = obj
    end

    def lowlevel_error_handler(obj = nil, &block)
      obj ||= block
      raise ArgumentError, "lowlevel_error_handler needs an object that responds to #call, or a block" unless obj.respond_to?(:call)

      @config.lowlevel_error_handler = obj
    end

    # An object receiving the server's log lines (`write`) and the access log (`write` or `<<`).
    def custom_logger(logger)
      raise ArgumentError, "custom_logger needs an object that responds to #write or #<<, got #{logger.inspect}" unless logger.respond_to?(:write) || logger.respond_to?(:<<)

      @config.custom_logger = logger
    end

    # A block turning each of the server's log lines into the line to print.
    def log_formatter(&block)
      raise ArgumentError, "log_formatter needs a block" unless block

      @config.log_formatter = block
    end

    def plugin(name)
      record(:plugin, [name])
      @config.load_plugin(name.to_s, call_site, self)
    end

    # Blocks run after every config file, only in the matching mode (`workers` decides).
    def single(&block)
      raise ArgumentError, "single needs a block" unless block

      @config.mode_blocks << [:single, block, call_site]
    end

    def cluster(&block)
      raise ArgumentError, "cluster needs a block" unless block

      @config.mode_blocks << [:cluster, block, call_site]
    end

    Configuration::HOOKS.each do |name, spec|
      ([name] + spec.fetch(:aliases)).each do |method_name|
        define_method(method_name) do |key = nil, &block|
          raise ArgumentError, "#{method_name} needs a block" unless block
          raise ArgumentError, "#{method_name} takes no key" if key && !spec[:key]

          @config.add_hook(name, block, key: key, where: call_site)
        end
      end
    end

    def method_missing(name, *_args, &_block)
      raise ConfigError, "#{call_site}: unknown configuration method #{name}"
    end

    def respond_to_missing?(_name, _include_private = false)
      false
    end

    private

    def record(name, args)
      @config.record(name.to_s, args, call_site)
      nil
    end

    def guard
      yield
    rescue ConfigError
      raise
    rescue SyntaxError => e
      # Ruby's message already starts with file:line.
      raise ConfigError, e.message.lines.first(3).join.chomp
    rescue ScriptError, StandardError => e
      # One line: Ruby may append a code snippet (error_highlight) or suggestions.
      raise ConfigError, "#{location_of(e)}: #{e.message.lines.first.to_s.chomp} (#{e.class})"
    end

    # The innermost line of a config file (this one or any other) that led here.
    def call_site
      loc = caller_locations.find { |l| @config.files.include?(l.absolute_path || l.path) }
      loc ? "#{loc.absolute_path || loc.path}:#{loc.lineno}" : @path
    end

    def location_of(error)
      line = (error.backtrace || []).find { |l| @config.files.any? { |f| l.start_with?("#{f}:") } }
      line ? line[/\A[^:]+:\d+/] : @path
    end

    public

    # Last, so a hand-written method of the same name cannot hide (or be hidden by) an option.
    OPTIONS.each do |name|
      raise ArgumentError, "option #{name} clashes with Catamount::DSL##{name}" if method_defined?(name, false) || private_method_defined?(name, false)

      define_method(name) do |*args|
        record(name, args)
      end
    end
  end
end
