# frozen_string_literal: true

module Catamount
  # A small `Puma` namespace for config files and plugins written against Puma: `Puma::Plugin`
  # (with `create`), `Puma.stats` and `Puma.stats_hash`. Installed only when no `Puma` is defined
  # yet (the real gem, if loaded first, wins and nothing here is touched); if the real gem is
  # loaded later it simply reopens these definitions.
  module PumaCompat
    def self.install
      return if defined?(::Puma)

      ::Object.const_set(:Puma, Module.new)
      ::Puma.const_set(:Plugin, Class.new(Catamount::Plugin) do
        # Puma's plugin entry point: the plugin's name is its file's name.
        def self.create(&block)
          file = caller_locations(1, 1).first
          name = Catamount::Plugins.name_from(file.absolute_path || file.path)
          raise ArgumentError, "Puma::Plugin.create must be called from puma/plugin/NAME.rb" unless name

          klass = Class.new(self)
          klass.class_eval(&block)
          Catamount::Plugins.register(name, klass)
        end
      end)
      # The same shape as the real gem's: `stats` and `stats_hash` ask the object set with
      # `stats_object=`, so if the gem is loaded later and redefines them, they still answer.
      ::Puma.define_singleton_method(:stats_object=) { |source| @get_stats = source }
      ::Puma.define_singleton_method(:stats_hash) { @get_stats.stats }
      ::Puma.define_singleton_method(:stats) do
        require "json"
        @get_stats.stats.to_json
      end
      attach_stats
    end

    # Where `Puma.stats` reads from (an object with `stats`, as the real gem expects).
    module StatsSource
      def self.stats
        Catamount.stats
      end
    end

    # Points `Puma.stats` at Catamount's numbers, whichever `Puma` is defined (the shim or the
    # real gem); called when the shim is installed and again once the app is loaded.
    def self.attach_stats
      return unless defined?(::Puma) && ::Puma.respond_to?(:stats_object=)

      ::Puma.stats_object = StatsSource
    end

    # Before a third-party plugin file is required: the shim, or, when the real gem is loaded,
    # its `Puma::Plugin` (which `require "puma"` alone does not load).
    def self.prepare_for_plugin
      install
      return if defined?(::Puma::Plugin)

      require "puma/plugin"
    rescue LoadError
      nil
    end

    # A plugin the real Puma gem registered (when it was loaded before the config file).
    def self.foreign_plugin(name)
      return unless defined?(::Puma::Plugins) && ::Puma::Plugins.respond_to?(:find)

      ::Puma::Plugins.find(name)
    rescue StandardError
      nil
    end
  end
end
