# frozen_string_literal: true

# The TLS tests' app (test/test_tls.rb): what the request looked like to the app.
require "json"

run lambda { |env|
  body = env["rack.input"].read
  facts = {
    "scheme" => env["rack.url_scheme"], "https" => env["HTTPS"], "port" => env["SERVER_PORT"],
    "method" => env["REQUEST_METHOD"], "body" => body.bytesize, "hijack" => env["rack.hijack?"]
  }
  facts["peercert"] = env["puma.peercert"].subject.to_s if env.key?("puma.peercert")
  [200, { "content-type" => "application/json" }, [JSON.generate(facts)]]
}
