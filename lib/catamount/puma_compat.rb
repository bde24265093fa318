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
      ::Puma.define_singleton_method(:stats_hash) { Catamount.stats }
      ::Puma.define_singleton_method(:stats) do
        require "json"
        Catamount.stats.to_json
      end
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
