# frozen_string_literal: true

# A small Rails 6.1 app (Debian's ruby-rails, no bundler, no database) with Rails' default
# middleware stack, run in production mode: one controller action rendering a view in a layout.
ENV["RAILS_ENV"] ||= "production"
ENV["SECRET_KEY_BASE"] ||= "bench" * 26

require "logger"
require "rails"
require "action_controller/railtie"
require "action_view/railtie"

module BenchRails
  # Production settings as `rails new` generates them, minus what needs assets or a database.
  class Application < Rails::Application
    config.load_defaults 6.1
    config.root = File.expand_path("..", __dir__)
    config.eager_load = true
    config.cache_classes = true
    config.consider_all_requests_local = false
    config.action_controller.perform_caching = true
    config.public_file_server.enabled = false
    config.log_level = :warn
    config.logger = ActiveSupport::Logger.new($stderr)
    config.hosts.clear
  end
end
