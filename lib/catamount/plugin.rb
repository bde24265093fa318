# frozen_string_literal: true

module Catamount
  # Plugins, Puma-style: `plugin :name` in a config file (or `--plugin name`).
  #
  # Built in: `tmp_restart`, `systemd` and `metrics` (puma-metrics' name for what is built in). Any other name is looked up as
  # `puma/plugin/<name>.rb` on the load path, the file a Puma plugin gem ships; such a file calls
  # `Puma::Plugin.create { ... }` (see puma_compat.rb), which registers the plugin here. A
  # plugin may define `config(dsl)` (run when it is loaded, with the config DSL) and
  # `start(launcher)` (run once the server is up).
  class Plugin
    # Runs the block on its own thread; an error in it is reported, not raised.
    def in_background(&block)
      Thread.new do
        block.call
      rescue StandardError => e
        Context.write_error($stderr, "catamount: plugin #{self.class.name || 'plugin'} background thread failed: #{e.message} (#{e.class})")
      end
    end
  end

  # Which plugin classes are known, by name.
  module Plugins
    BUILT_IN = {
      "tmp_restart" => "catamount/plugins/tmp_restart",
      "systemd" => "catamount/plugins/systemd",
      "metrics" => "catamount/plugins/metrics"
    }.freeze

    @registry = {}

    class << self
      def register(name, klass)
        @registry[name.to_s] = klass
      end

      def find(name)
        @registry[name.to_s]
      end

      # An instance of plugin `name`; ConfigError naming `where` if there is none.
      def load(name, where)
        if (path = BUILT_IN[name])
          require path
        elsif !find(name)
          PumaCompat.prepare_for_plugin
          begin
            require "puma/plugin/#{name}"
          rescue LoadError => e
            raise ConfigError, "#{where}: unknown plugin #{name.inspect} (no puma/plugin/#{name}.rb on the load path: #{e.message})"
          end
        end
        klass = find(name) || PumaCompat.foreign_plugin(name)
        raise ConfigError, "#{where}: puma/plugin/#{name}.rb did not define a plugin (Puma::Plugin.create)" unless klass

        klass.new
      end

      # The plugin name of a file that calls `create`: puma/plugin/NAME.rb.
      def name_from(path)
        path[%r{/puma/plugin/([^/]+)\.rb\z}, 1] || path[%r{/catamount/plugins/([^/]+)\.rb\z}, 1]
      end
    end
  end
end
