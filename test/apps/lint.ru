# frozen_string_literal: true

# Every request passes through the loaded Rack's own Rack::Lint: a wrong env or a wrong use of
# rack.input fails. The response names the Rack release, so a test can tell which one ran.
require "rack/lint"

use Rack::Lint
run(lambda do |env|
  body = env["rack.input"] ? env["rack.input"].read : ""
  [200, { "content-type" => "text/plain", "content-length" => body.bytesize.to_s, "x-rack-release" => Rack.release },
   [body]]
end)
