# frozen_string_literal: true

module Catamount
  VERSION = "0.1.0"
  CODENAME = "First Light"
end
