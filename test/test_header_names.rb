# frozen_string_literal: true

require "helper"
require "table_test"

# Request header names that differ only by `_` and `-` (RFC 9110 allows both in a field name;
# the Rack env maps both to `_`), table-driven: one row per spelling, with the env keys the
# app must see (a value) or must not see (nil). The rule (docs/architecture.md, "Header names
# with `_`"): a name with `_` never takes a key the server reads (framing, Host, Connection,
# the scheme and address headers) or that proxies set for the app to trust (X-Forwarded-*,
# X-Real-IP, Client-IP...), nor the key of a `-` field in the same request; any other
# underscored name reaches the app as Puma gives it. Puma 5.6.5 differs where a row says.
class TestHeaderNames < Minitest::Test
  include Support::ServerTest
  include Support::TableTest
  parallelize_me!

  # [what, header fields (Host: x is added unless they name a host), body, expected env]
  ROWS = [
    ["X-Forwarded-For", "X-Forwarded-For: 10.0.0.1\r\n", "", { "HTTP_X_FORWARDED_FOR" => "10.0.0.1" }],
    ["x-forwarded-for in lower case", "x-forwarded-for: 10.0.0.1\r\n", "", { "HTTP_X_FORWARDED_FOR" => "10.0.0.1" }],
    ["X-FORWARDED-FOR in upper case", "X-FORWARDED-FOR: 10.0.0.1\r\n", "", { "HTTP_X_FORWARDED_FOR" => "10.0.0.1" }],
    # Puma 5.6.5 gives this one to the app as HTTP_X_FORWARDED_FOR.
    ["X_Forwarded_For alone is dropped", "X_Forwarded_For: 6.6.6.6\r\n", "", { "HTTP_X_FORWARDED_FOR" => nil }],
    ["X-Forwarded_For alone is dropped", "X-Forwarded_For: 6.6.6.6\r\n", "", { "HTTP_X_FORWARDED_FOR" => nil }],
    ["X_Forwarded_For before X-Forwarded-For", "X_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.1\r\n", "",
     { "HTTP_X_FORWARDED_FOR" => "10.0.0.1" }],
    ["X_Forwarded_For after X-Forwarded-For", "X-Forwarded-For: 10.0.0.1\r\nX_Forwarded_For: 6.6.6.6\r\n", "",
     { "HTTP_X_FORWARDED_FOR" => "10.0.0.1" }],
    ["X_Forwarded_Host", "X_Forwarded_Host: evil.example\r\n", "", { "HTTP_X_FORWARDED_HOST" => nil, "SERVER_NAME" => "x" }],
    ["X_Forwarded_Port", "X_Forwarded_Port: 444\r\n", "", { "HTTP_X_FORWARDED_PORT" => nil }],
    ["X_Forwarded_Prefix", "X_Forwarded_Prefix: /evil\r\n", "", { "HTTP_X_FORWARDED_PREFIX" => nil }],
    # Puma 5.6.5 passes it on as HTTP_X_FORWARDED_PROTO (without counting it for the scheme).
    ["X_Forwarded_Proto", "X_Forwarded_Proto: https\r\n", "",
     { "HTTP_X_FORWARDED_PROTO" => nil, "rack.url_scheme" => "http", "SERVER_PORT" => "80" }],
    ["X-Forwarded-Proto counts for the scheme", "X-Forwarded-Proto: https\r\n", "",
     { "HTTP_X_FORWARDED_PROTO" => "https", "rack.url_scheme" => "https", "SERVER_PORT" => "443" }],
    ["X_Forwarded_Scheme", "X_Forwarded_Scheme: https\r\n", "", { "HTTP_X_FORWARDED_SCHEME" => nil, "rack.url_scheme" => "http" }],
    ["X_Forwarded_Ssl", "X_Forwarded_Ssl: on\r\n", "", { "HTTP_X_FORWARDED_SSL" => nil, "rack.url_scheme" => "http" }],
    ["X_Real_IP (the configured address header)", "X_Real_IP: 6.6.6.6\r\n", "",
     { "HTTP_X_REAL_IP" => nil, "REMOTE_ADDR" => "127.0.0.1" }],
    ["X-Real-IP (the configured address header)", "X-Real-IP: 10.0.0.2\r\n", "",
     { "HTTP_X_REAL_IP" => "10.0.0.2", "REMOTE_ADDR" => "10.0.0.2" }],
    ["Client_IP", "Client_IP: 6.6.6.6\r\n", "", { "HTTP_CLIENT_IP" => nil }],
    ["True_Client_IP", "True_Client_IP: 6.6.6.6\r\n", "", { "HTTP_TRUE_CLIENT_IP" => nil }],
    # Framing: only the real fields frame the body; their underscored twins reach no one. Puma
    # 5.6.5 gives them to the app under keys with a comma (HTTP_CONTENT,LENGTH).
    ["Content-Length", "Content-Length: 5\r\n", "hello", { "CONTENT_LENGTH" => "5", "body" => "hello" }],
    ["content-length in lower case", "content-length: 5\r\n", "hello", { "CONTENT_LENGTH" => "5", "body" => "hello" }],
    ["Content_Length frames nothing", "Content_Length: 5\r\n", "hello",
     { "CONTENT_LENGTH" => nil, "HTTP_CONTENT_LENGTH" => nil, "body" => "" }],
    ["Content_Length beside Content-Length", "Content-Length: 5\r\nContent_Length: 7\r\n", "hello",
     { "CONTENT_LENGTH" => "5", "HTTP_CONTENT_LENGTH" => nil, "body" => "hello" }],
    ["Transfer_Encoding frames nothing", "Transfer_Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n",
     { "HTTP_TRANSFER_ENCODING" => nil, "CONTENT_LENGTH" => nil, "body" => "" }],
    ["Transfer_Encoding beside Content-Length", "Transfer_Encoding: chunked\r\nContent-Length: 3\r\n", "abc",
     { "HTTP_TRANSFER_ENCODING" => nil, "CONTENT_LENGTH" => "3", "body" => "abc" }],
    ["Transfer-Encoding chunked", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n",
     { "HTTP_TRANSFER_ENCODING" => nil, "CONTENT_LENGTH" => "5", "body" => "hello" }],
    # Rack forbids HTTP_CONTENT_TYPE and HTTP_CONTENT_LENGTH; Puma 5.6.5 sets the first.
    ["Content_Type", "Content_Type: text/evil\r\n", "", { "CONTENT_TYPE" => nil, "HTTP_CONTENT_TYPE" => nil }],
    ["Content_Type beside Content-Type", "Content_Type: text/evil\r\nContent-Type: text/plain\r\n", "",
     { "CONTENT_TYPE" => "text/plain", "HTTP_CONTENT_TYPE" => nil }],
    ["Host", "Host: h.example\r\n", "", { "HTTP_HOST" => "h.example", "SERVER_NAME" => "h.example" }],
    ["host in lower case", "host: h.example\r\n", "", { "HTTP_HOST" => "h.example", "SERVER_NAME" => "h.example" }],
    ["HOST in upper case", "HOST: h.example:8080\r\n", "", { "HTTP_HOST" => "h.example:8080", "SERVER_PORT" => "8080" }],
    ["Connection_", "Connection_: keep-alive\r\n", "", { "HTTP_CONNECTION" => "close", "HTTP_CONNECTION_" => "keep-alive" }],
    # Any other name keeps its `_` spelling, as in Puma, unless a `-` twin is there.
    ["X_Custom alone", "X_Custom: u\r\n", "", { "HTTP_X_CUSTOM" => "u" }],
    ["X_Custom beside X-Custom", "X_Custom: u\r\nX-Custom: d\r\n", "", { "HTTP_X_CUSTOM" => "d" }],
    ["X-Custom beside X_Custom", "X-Custom: d\r\nX_Custom: u\r\n", "", { "HTTP_X_CUSTOM" => "d" }],
    ["two X_Custom: the first", "X_Custom: u1\r\nX_Custom: u2\r\n", "", { "HTTP_X_CUSTOM" => "u1" }],
    ["X-Custom twice: joined", "X-Custom: d1\r\nx-custom: d2\r\n", "", { "HTTP_X_CUSTOM" => "d1, d2" }],
    ["API_KEY", "API_KEY: k\r\n", "", { "HTTP_API_KEY" => "k" }]
  ].freeze

  def test_each_header_name_spelling
    server = start_with_config("set_remote_address header: 'X-Real-IP'\n")
    assert_rows(ROWS, "header name spellings") { |row| check(server.port, *row) }
  end

  private

  def check(port, what, fields, body, expected)
    host = fields.match?(/^host:/i) ? "" : "Host: x\r\n"
    response = raw_request(port, "POST /env HTTP/1.1\r\n#{host}#{fields}Connection: close\r\n\r\n#{body}")
    return "#{what}: answered #{response.status}" unless response.status == 200

    env = JSON.parse(response.body)
    wrong = expected.reject { |key, value| env[key] == value }
    "#{what}: #{wrong.map { |key, value| "#{key} is #{env[key].inspect}, not #{value.inspect}" }.join(', ')}" unless wrong.empty?
  end
end
