# frozen_string_literal: true

require "helper"

# What the app returns becomes a correct response, or a clean 500 when the app got it wrong.
class TestRackResponse < Minitest::Test
  include Support::ServerTest
  include Support::KitchenServer
  parallelize_me!

  def test_app_exception_is_a_500_logged_with_backtrace_and_server_keeps_serving
    r = get(port, "/boom")
    assert_equal 500, r.status
    assert_includes r.body, "kaboom" # development shows the error
    @server.wait_for(/Rack app \("GET \/boom" - \(127\.0\.0\.1\)\): #<ArgumentError: kaboom>/, stream: :stderr)
    @server.wait_for(/kitchen\.ru:\d+/, stream: :stderr)
    assert_equal "hello", get(port, "/").body
  end

  def test_production_500_does_not_leak_the_error
    server = start_server("-e", "production")
    r = get(server.port, "/boom")
    assert_equal 500, r.status
    refute_includes r.body, "kaboom"
  end

  def test_wrongly_built_responses_are_clean_500s
    %w[/bad_status /bad_header_value /bad_header_name /two_elements /not_array /wrong_length
       /length_after_nbsp].each do |path|
      sock = connect(port)
      sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\n\r\n")
      data = read_until_close(sock)
      assert_match(/\AHTTP\/1\.1 500 Internal Server Error\r\n/, data, path)
      refute_includes data, "evil", path
      assert_equal 1, data.scan(/^HTTP\//).size, path
    end
    assert_equal "hello", get(port, "/").body
  end

  def test_multi_value_headers_rack2_and_rack3
    r = get(port, "/multi")
    assert_equal "a=1\nb=2", r["set-cookie"]
    assert_equal "one\ntwo", r["x-list"]
  end

  def test_streamed_body_is_chunked_on_11_and_close_delimited_on_10
    Dir.mktmpdir do |dir|
      marker = File.join(dir, "closed")
      r = get(port, "/stream?n=3&size=4&marker=#{marker}")
      assert_equal "chunked", r["transfer-encoding"]
      assert_equal "000011112222", r.body
      assert_equal "closed", wait_for_file(marker)
    end
    sock = connect(port)
    sock.write("GET /stream?n=2&size=3 HTTP/1.0\r\n\r\n")
    data = read_until_close(sock)
    head, body = data.split("\r\n\r\n", 2)
    refute_match(/transfer-encoding|content-length/i, head)
    assert_equal "000111", body
  end

  def test_exception_mid_stream_before_anything_was_sent_is_a_500
    Dir.mktmpdir do |dir|
      marker = File.join(dir, "closed")
      sock = connect(port)
      # Before the first part: every yielded part goes out at once.
      sock.write("GET /stream_boom?at=0&size=10&marker=#{marker} HTTP/1.1\r\nHost: x\r\n\r\n")
      assert_match(/\AHTTP\/1\.1 500 /, read_until_close(sock))
      assert_equal "closed", wait_for_file(marker)
    end
  end

  def test_exception_mid_stream_after_bytes_went_out_aborts_the_connection
    sock = connect(port)
    sock.write("GET /stream_boom?n=4&at=3&size=70000 HTTP/1.1\r\nHost: x\r\n\r\n")
    data = read_until_close(sock)
    assert_match(/\AHTTP\/1\.1 200 OK\r\n/, data)
    refute data.end_with?("0\r\n\r\n"), "a failed chunked body must not be terminated as complete"
    assert_equal 1, data.scan(/^HTTP\//).size
  end

  def test_to_path_body_is_sent_from_the_file
    Dir.mktmpdir do |dir|
      path = File.join(dir, "blob")
      content = Random.new(3).bytes(3 * 1024 * 1024 + 17)
      File.binwrite(path, content)
      r = get(port, "/file?path=#{path}")
      assert_equal content.bytesize.to_s, r["content-length"]
      assert_equal content, r.body.b
    end
  end

  def test_after_reply_callbacks_run
    Dir.mktmpdir do |dir|
      marker = File.join(dir, "after")
      assert_equal "ok", get(port, "/after_reply?marker=#{marker}").body
      assert_equal "after", wait_for_file(marker)
    end
  end

  # As Puma's: the callbacks run whatever the app did (here: raised, or answered nonsense).
  def test_after_reply_callbacks_run_when_the_app_fails
    Dir.mktmpdir do |dir|
      %w[raise malformed].each do |how|
        marker = File.join(dir, how)
        assert_equal 500, get(port, "/after_reply_then?marker=#{marker}&how=#{how}").status
        assert_equal "after", wait_for_file(marker), how
      end
    end
  end

  def test_app_connection_close_header_closes
    sock = connect(port)
    sock.write("GET /close_header HTTP/1.1\r\nHost: x\r\n\r\n")
    r = read_response(sock)
    assert_equal "close", r["connection"]
    assert_equal "", read_until_close(sock)
  end
end
