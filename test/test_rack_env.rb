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
    assert_equal "/env?a=1&b=2", env["REQUEST_URI"], "the fragment is left out, as Puma does"
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
    assert_equal true, env["rack.hijack?"]
    assert_equal "Float", env["body_wait"]
    assert env["catamount_body_wait"]
    assert_match(/\ACatamount \d/, env["SERVER_SOFTWARE"])
    assert_equal "CGI/1.2", env["GATEWAY_INTERFACE"]
    assert_equal false, env["rack.run_once"]
    assert_equal true, env["errors_is_stderr"]
    assert_equal false, env["env_frozen"]
  end

  # `rack.multiprocess` says whether other processes call the app too: a cluster's workers do.
  def test_multiprocess_is_true_in_a_cluster
    server = start_server("-w", "2")
    env = env_for(server.port, "GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_equal true, env["rack.multiprocess"]
  ensure
    kill_named_workers(server) if server
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

  # Each proxy field is read on its own: a repeated X-Forwarded-Proto with `https` anywhere
  # means HTTPS, though the env shows the fields joined.
  def test_a_repeated_forwarded_proto_field_is_read_field_by_field
    server = start_server
    env = env_for(server.port, "GET /env HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\n" \
                               "X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
    assert_equal "http, https", env["HTTP_X_FORWARDED_PROTO"]
    assert_equal "https", env["rack.url_scheme"]
    assert_equal "443", env["SERVER_PORT"]
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

  # A request without a body gets a shared, stateless input (as Puma's): reading it gives
  # what an empty stream gives, on every request of a keep-alive connection.
  def test_a_request_without_a_body_reads_as_an_empty_input
    server = start_server
    sock = connect(server.port)
    requests = ["GET /input HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD /input HTTP/1.1\r\nHost: x\r\n\r\n",
                "POST /input HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "GET /input HTTP/1.1\r\nHost: x\r\n\r\n"]
    requests.each do |request|
      sock.write(request)
      response = read_response(sock, head_request: request.start_with?("HEAD"))
      assert_equal 200, response.status
      next if request.start_with?("HEAD")

      info = JSON.parse(response.body)
      assert_nil info["read_4"]
      assert_equal "", info["read_0"]
      assert_equal "", info["read_all"]
      assert_equal "", info["read_into"]
      assert_equal "", info["buffer"], "a buffer passed to read is emptied"
      assert_nil info["gets"]
      assert_equal [], info["each"]
      assert_equal 0, info["rewind"]
      assert_equal true, info["eof"]
    end
    refute_match(/Error/, server.stderr)
  ensure
    sock&.close
  end

  # Repeated fields join into one value whatever the case of their names; an underscored name
  # never replaces a dash-named one with the same key, wherever it comes; of two underscored
  # ones the first wins; `Content_Type` is not `Content-Type`, and never HTTP_CONTENT_TYPE
  # (Rack forbids that key; test/test_header_names.rb has the whole rule).
  def test_repeated_and_underscored_headers_become_one_env_key_each
    server = start_server
    head = "X-A: 1\r\nX_B: u1\r\nx-a: 2\r\nX_C: u\r\nX-C: d\r\nX_B: u2\r\nX-a: 3\r\n" \
           "Content_Type: u\r\nContent-Type: text/plain\r\ncontent-type: text/html\r\n"
    env = env_for(server.port, "GET /env HTTP/1.1\r\nHost: x\r\n#{head}Connection: close\r\n\r\n")
    assert_equal "1, 2, 3", env["HTTP_X_A"]
    assert_equal "u1", env["HTTP_X_B"]
    assert_equal "d", env["HTTP_X_C"]
    assert_equal "text/plain, text/html", env["CONTENT_TYPE"]
    assert_nil env["HTTP_CONTENT_TYPE"]
    assert_equal "x", env["HTTP_HOST"]
  end

  # More keys than the env builder gathers before one insert: every one still arrives once.
  def test_a_request_with_many_headers_keeps_every_key
    server = start_server
    names = (1..60).map { |i| "X-Many-#{i}" }
    head = (names.map { |n| "#{n}: a\r\n" } + names.reverse.map { |n| "#{n.downcase}: b\r\n" }).join
    env = env_for(server.port, "GET /env HTTP/1.1\r\nHost: x\r\n#{head}Connection: close\r\n\r\n")
    names.each { |n| assert_equal "a, b", env["HTTP_#{n.upcase.tr('-', '_')}"], n }
    assert_equal "GET", env["REQUEST_METHOD"]
    assert_equal "x", env["SERVER_NAME"]
    info = JSON.parse(raw_request(server.port, "GET /input HTTP/1.1\r\nHost: x\r\n#{head}Connection: close\r\n\r\n").body)
    few = JSON.parse(raw_request(server.port, "GET /input HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body)
    assert_equal few["env_size"] + 60, info["env_size"]
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
