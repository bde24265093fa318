# frozen_string_literal: true

module Greeting
  TEXT = "hello from an -I path"
end
