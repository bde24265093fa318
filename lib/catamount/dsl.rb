# frozen_string_literal: true

module Catamount
  # Evaluates Puma-style config files (`config/puma.rb`).
  #
  # Each DSL call is recorded as `[name, args, "file:line"]`; the native side validates and
  # applies them in order, so a config line and a CLI flag get the same checks and every error
  # names the line it came from. A Puma method Catamount does not serve yet is a boot error,
  # never silently ignored.
  class DSL
    # Methods served now (see Catamount::Native::Options for defaults).
    SERVED = %i[
      bind port threads environment rackup tag quiet log_requests pidfile directory
      persistent_timeout first_data_timeout force_shutdown_after enable_keep_alives max_keep_alive
    ].freeze

    # Puma DSL methods recognised but not served yet, and what they wait for.
    NOT_YET = {
      "cluster mode" => %i[workers preload_app! fork_worker prune_bundler extra_runtime_dependencies
                           wait_for_less_busy_worker worker_culling_strategy worker_check_interval
                           worker_timeout worker_boot_timeout worker_shutdown_timeout nakayoshi_fork
                           silence_single_worker_warning silence_fork_callback_warning
                           before_fork on_worker_boot before_worker_boot on_worker_shutdown
                           before_worker_shutdown after_worker_shutdown on_worker_fork before_worker_fork
                           after_worker_fork after_worker_boot on_refork before_refork after_refork
                           cluster single],
      "the control server" => %i[activate_control_app state_path state_permission],
      "TLS" => %i[ssl_bind],
      "plugins" => %i[plugin],
      "the configuration release" => %i[
        clear_binds! set_default_host bind_to_activated_sockets idle_timeout queue_requests
        drain_on_shutdown set_remote_address rack_url_scheme supported_http_methods
        http_content_length_limit allow_underscore_headers io_selector_backend early_hints
        max_fast_inline max_io_threads fiber_per_request clean_thread_locals
        raise_exception_on_sigterm stdout_redirect mutate_stdout_and_stderr_to_sync_on_write
        custom_logger log_formatter debug shutdown_debug app restart_command
        lowlevel_error_handler load out_of_band on_restart before_restart on_booted after_booted
        on_stopped after_stopped on_thread_start before_thread_start on_thread_exit
        before_thread_exit
      ]
    }.each_with_object({}) { |(what, names), map| names.each { |n| map[n] = what } }.freeze

    # Evaluates `paths` in order; returns the recorded settings.
    def self.load(paths)
      settings = []
      paths.each { |path| new(settings, path).evaluate }
      settings
    end

    def initialize(settings, path)
      @settings = settings
      @path = File.expand_path(path)
    end

    def evaluate
      source = begin
        File.read(@path)
      rescue SystemCallError => e
        raise ConfigError, "#{@path}: cannot read config file (#{e.message.sub(/ @ .*/, '')})"
      end
      begin
        instance_eval(source, @path, 1)
      rescue ConfigError
        raise
      rescue SyntaxError => e
        # Ruby's message already starts with file:line.
        raise ConfigError, e.message.lines.first(3).join.chomp
      rescue ScriptError, StandardError => e
        raise ConfigError, "#{location_of(e)}: #{e.message} (#{e.class})"
      end
    end

    SERVED.each do |name|
      define_method(name) do |*args|
        @settings << [name.to_s, args, call_site]
        nil
      end
    end

    def method_missing(name, *args, &block)
      what = NOT_YET[name]
      raise ConfigError, "#{call_site}: #{name} is not supported yet (it needs #{what}, which Catamount does not have yet)" if what

      raise ConfigError, "#{call_site}: unknown configuration method #{name}"
    end

    def respond_to_missing?(name, include_private = false)
      NOT_YET.key?(name) || super
    end

    private

    def call_site
      loc = caller_locations.find { |l| l.absolute_path == @path || l.path == @path }
      loc ? "#{@path}:#{loc.lineno}" : @path
    end

    def location_of(error)
      line = (error.backtrace || []).find { |l| l.start_with?("#{@path}:") }
      line ? line[/\A[^:]+:\d+/] : @path
    end
  end
end
