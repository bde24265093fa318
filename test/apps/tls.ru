# frozen_string_literal: true

# The TLS tests' app (test/test_tls.rb): what the request looked like to the app (`/`), and
# the response kinds that must work over TLS too: `/events` (a body yielded in parts, chunked),
# `/hints` (a 103 Early Hints first), `/file` (a `to_path` body: this file); `/pid`: which
# process (cluster worker) answered; `/remote`: the client's address as the app sees it.
require "json"

# Three events, yielded one by one.
class Events
  def each
    3.times { |i| yield "data: #{i}\n\n" }
  end
end

# A body the server sends from its file.
class FileBody
  def initialize(path) = @path = path
  def to_path = @path
  def each = yield(File.binread(@path))
end

run lambda { |env|
  case env["PATH_INFO"]
  when "/events"
    [200, { "content-type" => "text/event-stream" }, Events.new]
  when "/hints"
    env["rack.early_hints"]&.call("link" => "</style.css>; rel=preload")
    [200, { "content-type" => "text/plain" }, ["after hints"]]
  when "/pid"
    [200, { "content-type" => "text/plain" }, [Process.pid.to_s]]
  when "/remote"
    [200, { "content-type" => "text/plain" }, [env["REMOTE_ADDR"]]]
  when "/file"
    [200, { "content-type" => "text/plain", "content-length" => File.size(__FILE__).to_s }, FileBody.new(__FILE__)]
  else
    body = env["rack.input"].read
    facts = {
      "scheme" => env["rack.url_scheme"], "https" => env["HTTPS"], "port" => env["SERVER_PORT"],
      "method" => env["REQUEST_METHOD"], "body" => body.bytesize, "hijack" => env["rack.hijack?"]
    }
    facts["peercert"] = env["puma.peercert"].subject.to_s if env.key?("puma.peercert")
    [200, { "content-type" => "application/json" }, [JSON.generate(facts)]]
  end
}
