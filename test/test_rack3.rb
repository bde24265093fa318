# frozen_string_literal: true

require "helper"
require "open3"
require "timeout"

# The server against a real Rack 3 (Debian 13's ruby-rack, fetched by script/fetch-rack3 since
# Debian 12 ships Rack 2.2): Rack 3's own Lint, its env rules and its response headers.
class TestRealRack3 < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  FETCH_LOCK = Mutex.new

  # The lib directory of Rack 3, fetched once per run (bounded: apt has its own time limits).
  def self.rack3_lib
    FETCH_LOCK.synchronize do
      @rack3_lib ||= begin
        out, err, status = Timeout.timeout(300) { Open3.capture3(File.join(Support::ROOT, "script", "fetch-rack3")) }
        raise "script/fetch-rack3 failed: #{err}" unless status.success?

        out.strip
      end
    end
  end

  def start_rack3(app)
    start_server(app: app, env: { "RUBYLIB" => self.class.rack3_lib })
  end

  def test_rack3_lint_passes_for_common_requests
    assert_match(/\A3\./, exercise_lint_app(start_rack3("lint.ru")))
  end

  def test_rack3_env_has_neither_rack_version_nor_http_version
    server = start_rack3("kitchen.ru")
    env = JSON.parse(raw_request(server.port, "POST /env HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" \
                                              "Connection: close\r\n\r\nok").body)
    refute env.key?("rack.version")
    assert_nil env["HTTP_VERSION"]
    assert_equal "ok", env["body"]
    assert_equal "HTTP/1.1", env["SERVER_PROTOCOL"]
  end

  def test_rack3_array_header_values_become_one_line_each
    server = start_rack3("kitchen.ru")
    response = raw_request(server.port, "GET /multi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert_equal 200, response.status
    assert_equal "a=1\nb=2", response["set-cookie"] # one header line per value
    assert_equal "one\ntwo", response["x-list"]
  end
end
