# frozen_string_literal: true

# The app of test/test_response_framing.rb: the path picks the status, headers and body it
# returns, each a way to get the response's framing wrong (or right). Bodies of responses that
# must be refused say "evil": none of it may reach the client.

# An `each` body (not an Array): its parts go out as they are yielded.
class FramingStream
  def initialize(*parts)
    @parts = parts
  end

  def each(&block)
    @parts.each(&block)
  end
end

FRAMING = {
  # Header values and names the server refuses.
  "/value_cr" => [200, { "x-v" => "a\rb" }, ["evil"]],
  "/value_lf_in_list" => [200, { "x-v" => ["a\nb"] }, ["evil"]],
  "/value_crlf_injects" => [200, { "x-v" => "a\r\nset-cookie: evil=1" }, ["evil"]],
  "/value_crlf_injects_list" => [200, { "x-v" => ["a\r\nset-cookie: evil=1"] }, ["evil"]],
  "/value_nul" => [200, { "x-v" => "a\0b" }, ["evil"]],
  "/name_cr" => [200, { "x\rv" => "1" }, ["evil"]],
  "/name_lf" => [200, { "x\nv" => "1" }, ["evil"]],
  "/name_space" => [200, { "x v" => "1" }, ["evil"]],
  "/name_colon" => [200, { "x:v" => "1" }, ["evil"]],
  "/name_nul" => [200, { "x\0v" => "1" }, ["evil"]],
  "/name_empty" => [200, { "" => "1" }, ["evil"]],
  # Rack 2: a String's "\n" separates values, one line each (not an injection).
  "/value_lf_rack2" => [200, { "x-v" => "a\nb" }, ["ok"]],
  # The app's own transfer-encoding: its body goes out as it is, once, then the connection closes.
  "/app_chunked_array" => [200, { "transfer-encoding" => "chunked" }, ["5\r\nhello\r\n0\r\n\r\n"]],
  "/app_chunked_stream" => [200, { "transfer-encoding" => "chunked" }, FramingStream.new("5\r\nhello\r\n", "0\r\n\r\n")],
  # The app's content-length against its body.
  "/length_short_array" => [200, { "content-length" => "3" }, ["evil!"]],
  "/length_long_array" => [200, { "content-length" => "9" }, ["evil!"]],
  "/length_short_stream_first" => [200, { "content-length" => "3" }, FramingStream.new("evil!")],
  "/length_short_stream_later" => [200, { "content-length" => "7" }, FramingStream.new("hello", "world")],
  "/length_long_stream" => [200, { "content-length" => "9" }, FramingStream.new("hello")],
  "/length_exact_stream" => [200, { "content-length" => "10" }, FramingStream.new("hello", "world")],
  "/length_not_a_number" => [200, { "content-length" => "5x" }, ["evil!"]],
  "/length_negative" => [200, { "content-length" => "-5" }, ["evil!"]],
  "/length_twice_list" => [200, { "content-length" => %w[5 6] }, ["evil!"]],
  "/length_twice_rack2" => [200, { "content-length" => "5\n6" }, ["evil!"]],
  "/length_and_chunked" => [200, { "content-length" => "5", "transfer-encoding" => "chunked" }, ["evil!"]],
  "/chunked_and_length_stream" => [200, { "transfer-encoding" => "chunked", "content-length" => "5" }, FramingStream.new("evil!")],
  # Statuses.
  "/status_100" => [100, {}, ["evil"]],
  "/status_101" => [101, { "upgrade" => "websocket" }, ["evil"]],
  "/status_103" => [103, { "link" => "</a.css>; rel=preload" }, ["evil"]],
  "/status_204_body" => [204, {}, ["evil"]],
  "/status_204_length" => [204, { "content-length" => "4" }, ["evil"]],
  "/status_304_body" => [304, { "etag" => "\"e\"" }, ["evil"]],
  "/status_304_length" => [304, { "content-length" => "4" }, ["evil"]],
  "/status_99" => [99, {}, ["evil"]],
  "/status_600" => [600, {}, ["evil"]],
  "/status_abc" => ["abc", {}, ["evil"]],
  "/status_string" => ["201", {}, ["made"]],
  "/status_599" => [599, {}, ["odd"]],
  # The connection is the server's to frame.
  "/connection_close" => [200, { "connection" => "close" }, ["bye"]],
  "/connection_keep_alive" => [200, { "connection" => "keep-alive" }, ["hi"]],
  "/plain" => [200, { "content-type" => "text/plain" }, ["hello"]],
  "/stream" => [200, {}, FramingStream.new("hel", "lo")],
  "/stream_length" => [200, { "content-length" => "5" }, FramingStream.new("hello")],
  "/next" => [200, {}, ["next"]],
  # The lowlevel_error_handler's answer (the tests' config picks it by the query string).
  "/raise" => nil
}.freeze

run(lambda do |env|
  raise "for the handler" if env["PATH_INFO"] == "/raise"

  status, headers, body = FRAMING.fetch(env["PATH_INFO"]) { [404, {}, ["no such case"]] }
  # A fresh Hash and body Array each time: the server may not change what the table holds.
  [status, headers.dup, body.is_a?(Array) ? body.dup : body]
end)
