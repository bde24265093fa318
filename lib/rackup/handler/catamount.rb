# frozen_string_literal: true

# `rackup -s catamount` under Rack 3 (the rackup gem): `Rackup::Handler.get` requires this file
# by the server's name and finds the handler registered here.
require "rackup/handler"
require "catamount/rack_handler"

module Rackup
  module Handler
    module Catamount
      extend ::Catamount::RackHandler
    end

    register :catamount, Catamount
  end
end
