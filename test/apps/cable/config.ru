# frozen_string_literal: true

# The ActionCable test app (test/test_actioncable.rb): a minimal Rails 6.1 application built from
# Debian's ruby-rails gems, no generator. ActionCable's engine mounts `ActionCable.server` at
# /cable (its nio4r event loop and worker pool are threads of its own; the pool thread returns
# from app.call after the hijack); config/cable.yml picks the async adapter. EchoChannel sends
# back what it receives and, on `"broadcast" => text`, broadcasts text to every subscriber of
# its stream. `/` is a plain Rails response, to show the server still answers meanwhile.
require "logger"
require "rails"
require "action_controller/railtie"
require "action_cable/engine"

class CableApp < Rails::Application
  config.root = __dir__
  config.eager_load = false
  config.cache_classes = true
  config.secret_key_base = "catamount-cable-test-#{'0' * 40}"
  # Warnings and errors only, on stderr, which the test reads for errors.
  config.logger = Logger.new($stderr, level: Logger::WARN)
  config.log_level = :warn
  config.hosts.clear
  # The test's client sends this Origin (any port: the server's is chosen by the OS).
  config.action_cable.allowed_request_origins = [%r{\Ahttp://127\.0\.0\.1:\d+\z}]
  config.action_cable.mount_path = "/cable"

  routes.append do
    get "/", to: ->(_env) { [200, { "content-type" => "text/plain" }, ["plain"]] }
  end
end

class EchoChannel < ActionCable::Channel::Base
  STREAM = "echo"

  def subscribed
    stream_from STREAM
  end

  def receive(data)
    if data.key?("broadcast")
      ActionCable.server.broadcast(STREAM, { "broadcast" => data["broadcast"] })
    else
      transmit({ "echo" => data })
    end
  end
end

Rails.application.initialize!
run Rails.application
