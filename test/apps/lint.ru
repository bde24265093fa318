# frozen_string_literal: true

# Every request passes through Rack::Lint: a wrong env or a wrong use of rack.input fails.
require "rack/lint"

use Rack::Lint
run(lambda do |env|
  body = env["rack.input"].read
  env["rack.input"].rewind if env["rack.input"].respond_to?(:rewind)
  [200, { "content-type" => "text/plain", "content-length" => body.bytesize.to_s }, [body]]
end)
