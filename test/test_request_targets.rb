# frozen_string_literal: true

require "helper"
require "table_test"

# Request-target forms (RFC 9112 §3.2), table-driven: one row per target, with the status and
# the env keys the app sees (test/apps/targets.ru answers them). origin-form is passed on as
# sent (never decoded or normalised: `..` reaches the app as it came, in PATH_INFO and
# REQUEST_URI alike); absolute-form's authority wins over Host (§3.2.2: SERVER_NAME,
# SERVER_PORT and HTTP_HOST all say it); authority-form only with CONNECT, asterisk-form only
# with OPTIONS; a fragment is taken off REQUEST_URI into FRAGMENT, as Puma does. The rules are
# in docs/architecture.md ("Request targets"); rows note where Puma 5.6.5 differs.
class TestRequestTargets < Minitest::Test
  include Support::ServerTest
  include Support::TableTest
  parallelize_me!

  # [what, request line, status, expected env (nil: the key is absent)]; Host: x is sent
  # unless the line is HTTP/1.0.
  ROWS = [
    # origin-form
    ["path and query", "GET /a/b?x=1&y=2 HTTP/1.1", 200,
     { "PATH_INFO" => "/a/b", "REQUEST_PATH" => "/a/b", "QUERY_STRING" => "x=1&y=2", "REQUEST_URI" => "/a/b?x=1&y=2",
       "SERVER_NAME" => "x", "SERVER_PORT" => "80", "HTTP_HOST" => "x" }],
    ["root", "GET / HTTP/1.1", 200, { "PATH_INFO" => "/", "QUERY_STRING" => "", "REQUEST_URI" => "/" }],
    ["empty query", "GET /? HTTP/1.1", 200, { "PATH_INFO" => "/", "QUERY_STRING" => "", "REQUEST_URI" => "/?" }],
    ["a second ? belongs to the query", "GET /a?b?c HTTP/1.1", 200, { "PATH_INFO" => "/a", "QUERY_STRING" => "b?c" }],
    ["two leading slashes are a path, not an authority", "GET //h/p HTTP/1.1", 200,
     { "PATH_INFO" => "//h/p", "SERVER_NAME" => "x" }],
    ["parameters in a segment", "GET /;p=1 HTTP/1.1", 200, { "PATH_INFO" => "/;p=1" }],
    ["an encoded NUL stays encoded", "GET /a%00b HTTP/1.1", 200, { "PATH_INFO" => "/a%00b" }],
    ["a bad escape is passed on (the app decodes)", "GET /a%zz?q=%zz HTTP/1.1", 200,
     { "PATH_INFO" => "/a%zz", "QUERY_STRING" => "q=%zz" }],
    ["dot-dot segments are not resolved", "GET /a/../b HTTP/1.1", 200, { "PATH_INFO" => "/a/../b", "REQUEST_URI" => "/a/../b" }],
    ["dot-dot above the root is passed on", "GET /../etc/passwd HTTP/1.1", 200, { "PATH_INFO" => "/../etc/passwd" }],
    ["encoded dot-dot is passed on", "GET /%2e%2e/x HTTP/1.1", 200, { "PATH_INFO" => "/%2e%2e/x" }],
    ["dot segments are not resolved", "GET /a/./b HTTP/1.1", 200, { "PATH_INFO" => "/a/./b" }],
    ["backslashes are data", "GET /\\..\\x HTTP/1.1", 200, { "PATH_INFO" => "/\\..\\x" }],
    ["characters RFC 3986 leaves out that Puma serves", "GET /a{b}|^`[c] HTTP/1.1", 200, { "PATH_INFO" => "/a{b}|^`[c]" }],

    # fragments: clients must not send one; Puma takes it off REQUEST_URI into FRAGMENT
    ["a fragment", "GET /a#frag HTTP/1.1", 200,
     { "PATH_INFO" => "/a", "REQUEST_URI" => "/a", "FRAGMENT" => "frag", "QUERY_STRING" => "" }],
    ["a query and a fragment", "GET /a?q=1#frag HTTP/1.1", 200,
     { "PATH_INFO" => "/a", "QUERY_STRING" => "q=1", "REQUEST_URI" => "/a?q=1", "FRAGMENT" => "frag" }],
    ["an empty fragment", "GET /a# HTTP/1.1", 200, { "PATH_INFO" => "/a", "REQUEST_URI" => "/a", "FRAGMENT" => "" }],
    ["? and / in a fragment", "GET /a#b?c/d HTTP/1.1", 200, { "PATH_INFO" => "/a", "QUERY_STRING" => "", "FRAGMENT" => "b?c/d" }],
    ["a second # (Puma refuses it too)", "GET /a#b#c HTTP/1.1", 400],
    ["no fragment, no FRAGMENT key", "GET /a HTTP/1.1", 200, { "has_fragment" => false }],

    # absolute-form: the target's authority beats the Host header (Puma keeps Host for all three)
    ["absolute-form with a port", "GET http://h.example:8080/p/a?q=1 HTTP/1.1", 200,
     { "PATH_INFO" => "/p/a", "QUERY_STRING" => "q=1", "REQUEST_URI" => "http://h.example:8080/p/a?q=1",
       "SERVER_NAME" => "h.example", "SERVER_PORT" => "8080", "HTTP_HOST" => "h.example:8080" }],
    ["absolute-form without a port", "GET http://h.example/p HTTP/1.1", 200,
     { "PATH_INFO" => "/p", "SERVER_NAME" => "h.example", "SERVER_PORT" => "80", "HTTP_HOST" => "h.example" }],
    # Puma gives an empty PATH_INFO.
    ["absolute-form with an empty path", "GET http://h.example HTTP/1.1", 200,
     { "PATH_INFO" => "/", "REQUEST_PATH" => "/", "QUERY_STRING" => "", "HTTP_HOST" => "h.example" }],
    ["absolute-form with a query and no path", "GET http://h.example?x=1 HTTP/1.1", 200,
     { "PATH_INFO" => "/", "QUERY_STRING" => "x=1" }],
    ["absolute-form with a fragment", "GET http://h.example/p#f HTTP/1.1", 200,
     { "PATH_INFO" => "/p", "REQUEST_URI" => "http://h.example/p", "FRAGMENT" => "f" }],
    ["absolute-form scheme in upper case", "GET HTTP://h.example/p HTTP/1.1", 200, { "PATH_INFO" => "/p", "SERVER_NAME" => "h.example" }],
    ["absolute-form with an IPv6 literal", "GET http://[::1]:8080/p HTTP/1.1", 200,
     { "SERVER_NAME" => "[::1]", "SERVER_PORT" => "8080", "HTTP_HOST" => "[::1]:8080" }],
    ["https absolute-form over plain TCP: the connection says the scheme", "GET https://h.example/p HTTP/1.1", 200,
     { "PATH_INFO" => "/p", "rack.url_scheme" => "http", "SERVER_NAME" => "h.example" }],
    ["absolute-form on HTTP/1.0 without Host", "GET http://h.example/p HTTP/1.0", 200,
     { "SERVER_NAME" => "h.example", "HTTP_HOST" => "h.example" }],
    ["absolute-form with OPTIONS", "OPTIONS http://h.example HTTP/1.1", 200, { "PATH_INFO" => "/", "REQUEST_METHOD" => "OPTIONS" }],
    # Puma serves these five.
    ["absolute-form with userinfo", "GET http://user:pw@h.example/p HTTP/1.1", 400],
    ["absolute-form with another scheme", "GET ftp://h.example/p HTTP/1.1", 400],
    ["absolute-form without an authority", "GET http:/p HTTP/1.1", 400],
    ["absolute-form with an empty authority", "GET http:// HTTP/1.1", 400],
    ["absolute-form with a port that is not a number", "GET http://h.example:abc/p HTTP/1.1", 400],
    ["a quote in an absolute-form path (Puma refuses it too)", "GET http://h.example/a\"b HTTP/1.1", 400],

    # authority-form: CONNECT only (the default methods leave CONNECT out: 501, as Puma 6+)
    ["CONNECT is not served by default", "CONNECT h.example:443 HTTP/1.1", 501],
    ["authority-form with GET", "GET h.example:443 HTTP/1.1", 400],
    ["authority-form with OPTIONS", "OPTIONS h.example:443 HTTP/1.1", 400],

    # asterisk-form: OPTIONS only (Puma serves GET *)
    ["OPTIONS *", "OPTIONS * HTTP/1.1", 200, { "PATH_INFO" => "*", "REQUEST_URI" => "*", "QUERY_STRING" => "" }],
    ["GET *", "GET * HTTP/1.1", 400],
    ["OPTIONS *x", "OPTIONS *x HTTP/1.1", 400],
    ["OPTIONS */a", "OPTIONS */a HTTP/1.1", 400],
    ["OPTIONS *?x", "OPTIONS *?x HTTP/1.1", 400],

    # malformed
    ["a relative path", "GET a/b HTTP/1.1", 400],
    ["a bare ?", "GET ? HTTP/1.1", 400],
    ["a bare #", "GET # HTTP/1.1", 400],
    ["a space in the path", "GET /a b HTTP/1.1", 400],
    ["a tab in the path", "GET /a\tb HTTP/1.1", 400],
    ["a control byte in the path", "GET /a\x01b HTTP/1.1", 400],
    ["DEL in the path", "GET /a\x7Fb HTTP/1.1", 400],
    # Puma serves raw bytes past ASCII.
    ["a byte past ASCII in the path", "GET /a\xFFb HTTP/1.1".b, 400],
    ["a double quote in the path (as Puma)", "GET /a\"b HTTP/1.1", 400],
    ["angle brackets in the path (as Puma)", "GET /a<b> HTTP/1.1", 400],
    ["a double quote in the query (as Puma)", "GET /a?\"x HTTP/1.1", 400],
    ["angle brackets in the query (as Puma)", "GET /a?<x> HTTP/1.1", 400],
    ["a double quote in the fragment (as Puma)", "GET /a#\"x HTTP/1.1", 400]
  ].freeze

  # With `supported_http_methods :any`, CONNECT reaches the app, with authority-form only.
  CONNECT_ROWS = [
    ["CONNECT host:port", "CONNECT h.example:443 HTTP/1.1", 200,
     { "REQUEST_METHOD" => "CONNECT", "PATH_INFO" => "", "SERVER_NAME" => "h.example", "SERVER_PORT" => "443",
       "HTTP_HOST" => "h.example:443", "REQUEST_URI" => "h.example:443" }],
    ["CONNECT without a port", "CONNECT h.example HTTP/1.1", 400],
    ["CONNECT with a path", "CONNECT /p HTTP/1.1", 400],
    ["CONNECT *", "CONNECT * HTTP/1.1", 400],
    ["CONNECT with absolute-form", "CONNECT http://h.example:443/ HTTP/1.1", 400]
  ].freeze

  def test_each_request_target
    server = start_server(app: "targets.ru")
    assert_rows(ROWS, "request targets") { |row| check(server.port, *row) }
  end

  def test_connect_takes_authority_form_only
    server = start_with_config("supported_http_methods :any\n", app: "targets.ru")
    assert_rows(CONNECT_ROWS, "CONNECT targets") { |row| check(server.port, *row) }
  end

  private

  def check(port, what, line, status, expected = {})
    host = line.end_with?("HTTP/1.0") ? "" : "Host: x\r\n"
    response = raw_request(port, "#{line}\r\n#{host}Connection: close\r\n\r\n")
    return "#{what}: answered #{response.status}, not #{status}" unless response.status == status
    return if status != 200

    env = JSON.parse(response.body)
    wrong = expected.reject { |key, value| env[key] == value }
    "#{what}: #{wrong.map { |key, value| "#{key} is #{env[key].inspect}, not #{value.inspect}" }.join(', ')}" unless wrong.empty?
  end
end
