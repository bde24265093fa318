# frozen_string_literal: true

# Makes the loaded Rack look like Rack 3.1 (no Rack::VERSION, RELEASE 3.1.0) before the server
# reads it: the env must then carry neither rack.version nor HTTP_VERSION (Rack 3.1 SPEC).
require "json"
Rack.send(:remove_const, :VERSION) if Rack.const_defined?(:VERSION, false)
Rack.send(:remove_const, :RELEASE) if Rack.const_defined?(:RELEASE, false)
Rack.const_set(:RELEASE, "3.1.0")
run(lambda do |env|
  [200, { "content-type" => "application/json" },
   [JSON.generate("rack.version" => env.key?("rack.version"), "HTTP_VERSION" => env.key?("HTTP_VERSION"),
                  "input" => env["rack.input"].read)]]
end)
