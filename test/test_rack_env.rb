# frozen_string_literal: true

require "helper"

# The env the app sees, and Rack::Lint's verdict on it.
class TestRackEnv < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def env_for(port, raw)
    JSON.parse(raw_request(port, raw).body)
  end

  def test_env_keys
    server = start_server
    env = env_for(server.port, "GET /env?a=1&b=2#frag HTTP/1.1\r\nHost: example.com:8080\r\nX-Custom: v1\r\n" \
                               "X-Custom: v2\r\nConnection: close\r\n\r\n")
    assert_equal "GET", env["REQUEST_METHOD"]
    assert_equal "", env["SCRIPT_NAME"]
    assert_equal "/env", env["PATH_INFO"]
    assert_equal "/env", env["REQUEST_PATH"]
    assert_equal "/env?a=1&b=2#frag", env["REQUEST_URI"]
    assert_equal "a=1&b=2", env["QUERY_STRING"]
    assert_equal "frag", env["FRAGMENT"]
    assert_equal "example.com", env["SERVER_NAME"]
    assert_equal "8080", env["SERVER_PORT"]
    assert_equal "HTTP/1.1", env["SERVER_PROTOCOL"]
    assert_equal "127.0.0.1", env["REMOTE_ADDR"]
    assert_equal "v1, v2", env["HTTP_X_CUSTOM"]
    assert_equal "http", env["rack.url_scheme"]
    assert_equal true, env["rack.multithread"]
    assert_equal false, env["rack.multiprocess"]
    assert_equal false, env["rack.hijack?"]
    assert_equal "Float", env["body_wait"]
    assert env["catamount_body_wait"]
  end

  def test_ipv6_host_https_proxy_and_http10
    server = start_server("-t", "1:1")
    env = env_for(server.port, "GET /env HTTP/1.1\r\nHost: [::1]:9000\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
    assert_equal "[::1]", env["SERVER_NAME"]
    assert_equal "9000", env["SERVER_PORT"]
    assert_equal "https", env["rack.url_scheme"]
    assert_equal false, env["rack.multithread"]
    env = env_for(server.port, "GET /env HTTP/1.0\r\n\r\n")
    assert_equal "HTTP/1.0", env["SERVER_PROTOCOL"]
    assert_equal "localhost", env["SERVER_NAME"]
    assert_equal "80", env["SERVER_PORT"]
  end

  def test_a_version_header_cannot_clobber_http_version
    server = start_server("-t", "1:1")
    3.times do
      env = env_for(server.port, "GET /env HTTP/1.1\r\nHost: x\r\nVersion: evil\r\nConnection: close\r\n\r\n")
      assert_equal "HTTP/1.1", env["HTTP_VERSION"]
    end
    refute_match(/Error|error/, server.stderr)
  end

  def test_underscore_header_cannot_shadow_dash_header
    server = start_server
    env = env_for(server.port, "GET /env HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: evil\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: close\r\n\r\n")
    assert_equal "10.0.0.1", env["HTTP_X_FORWARDED_FOR"]
  end

  def test_bodies_in_env
    server = start_server
    env = env_for(server.port, "POST /env HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    assert_equal "abc", env["body"]
    assert_equal "3", env["CONTENT_LENGTH"]
    assert_equal "text/plain", env["CONTENT_TYPE"]
    assert_equal "StringIO", env["input_class"]
    env = env_for(server.port, "POST /env HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert_equal "abc", env["body"]
    assert_equal "3", env["CONTENT_LENGTH"]
    assert_nil env["HTTP_TRANSFER_ENCODING"]
    assert_equal "File", env["input_class"]
    big = "z" * 200_000
    env = env_for(server.port, "POST /env HTTP/1.1\r\nHost: x\r\nContent-Length: #{big.bytesize}\r\nConnection: close\r\n\r\n#{big}")
    assert_equal big.bytesize, env["body"].bytesize
    assert_equal "File", env["input_class"]
  end

  def test_rack2_gets_rack_version_and_http_version
    server = start_server
    env = env_for(server.port, "GET /env HTTP/1.0\r\n\r\n")
    assert_equal "HTTP/1.0", env["HTTP_VERSION"]
  end

  def test_rack_lint_passes_for_common_requests
    assert_match(/\A2\./, exercise_lint_app(start_server(app: "lint.ru")))
  end
end
