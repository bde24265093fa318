# frozen_string_literal: true

# `rackup -s catamount` and `rails server -u catamount` under Rack 2: `Rack::Handler.get`
# requires this file by the server's name and finds the handler registered here.
require "rack/handler"
require "catamount/rack_handler"

module Rack
  module Handler
    module Catamount
      extend ::Catamount::RackHandler
    end

    register :catamount, "Rack::Handler::Catamount"
  end
end
