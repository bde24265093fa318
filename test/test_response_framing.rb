# frozen_string_literal: true

require "helper"

# The server owns the response's framing: whatever status, headers and body the app returns
# (test/apps/framing.ru, one path per case), exactly one unambiguous response per request goes
# on the wire, or a 500 and a close (RFC 9112 §6). Each row sends its request with a second one
# pipelined behind it on the same connection and checks every byte the client reads: the first
# response, then the second's answer or the connection's end.
class TestResponseFraming < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  # The answer to the pipelined `GET /next` (it asks to close, so the bytes end there).
  NEXT = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnext"
  REFUSED_HEAD = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 22\r\n" \
                 "connection: close\r\n\r\n"
  # A response the app got wrong: the built-in 500, then the connection closes.
  REFUSED = "#{REFUSED_HEAD}Internal Server Error\n".freeze

  # [request line, what the client reads: the exact bytes (a String) or a pattern of them, and
  # whether the pipelined request is answered (:next) or the connection ends (:closed)].
  ROWS = [
    # Header values and names: refused whole, nothing of them written.
    ["GET /value_cr", REFUSED, :closed],
    ["GET /value_lf_in_list", REFUSED, :closed],
    ["GET /value_crlf_injects", REFUSED, :closed],
    ["GET /value_crlf_injects_list", REFUSED, :closed],
    ["GET /value_nul", REFUSED, :closed],
    ["GET /name_cr", REFUSED, :closed],
    ["GET /name_lf", REFUSED, :closed],
    ["GET /name_space", REFUSED, :closed],
    ["GET /name_colon", REFUSED, :closed],
    ["GET /name_nul", REFUSED, :closed],
    ["GET /name_empty", REFUSED, :closed],
    ["HEAD /value_cr", REFUSED_HEAD, :closed],
    ["GET /value_lf_rack2", "HTTP/1.1 200 OK\r\nx-v: a\r\nx-v: b\r\ncontent-length: 2\r\n\r\nok", :next],
    # The app's transfer-encoding: its body once, as it is (not chunked again, no length), then
    # a close, since only the app knows where its encoding ends.
    ["GET /app_chunked_array",
     "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n", :closed],
    ["GET /app_chunked_stream",
     "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n", :closed],
    ["HEAD /app_chunked_array", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", :next],
    ["GET /app_chunked_array HTTP/1.0", REFUSED.sub("HTTP/1.1", "HTTP/1.0"), :closed],
    ["GET /app_chunked_stream HTTP/1.0", REFUSED.sub("HTTP/1.1", "HTTP/1.0"), :closed],
    ["GET /length_and_chunked", REFUSED, :closed],
    ["GET /chunked_and_length_stream", REFUSED, :closed],
    # The app's content-length: refused while nothing is sent; once the head is out, the
    # connection ends with the body short, so no client reads it as complete.
    ["GET /length_short_array", REFUSED, :closed],
    ["GET /length_long_array", REFUSED, :closed],
    ["GET /length_short_stream_first", REFUSED, :closed],
    ["GET /length_short_stream_later", "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nhello", :closed],
    ["GET /length_long_stream", "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello", :closed],
    ["GET /length_exact_stream", "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhelloworld", :next],
    ["GET /length_not_a_number", REFUSED, :closed],
    ["GET /length_negative", REFUSED, :closed],
    ["GET /length_twice_list", REFUSED, :closed],
    ["GET /length_twice_rack2", REFUSED, :closed],
    ["HEAD /length_short_array", "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", :next],
    # Statuses: a 1xx is no final answer (101 only switches when asked to), 204 and 304 carry
    # no body whatever the app gives, and a status is three digits from 100 to 599.
    ["GET /status_100", REFUSED, :closed],
    ["GET /status_101", REFUSED, :closed],
    ["GET /status_103", REFUSED, :closed],
    ["GET /status_204_body", "HTTP/1.1 204 No Content\r\n\r\n", :next],
    ["GET /status_204_length", "HTTP/1.1 204 No Content\r\n\r\n", :next],
    ["GET /status_304_body", "HTTP/1.1 304 Not Modified\r\netag: \"e\"\r\n\r\n", :next],
    ["GET /status_304_length", "HTTP/1.1 304 Not Modified\r\ncontent-length: 4\r\n\r\n", :next],
    ["GET /status_99", REFUSED, :closed],
    ["GET /status_600", REFUSED, :closed],
    ["GET /status_abc", REFUSED, :closed],
    ["GET /status_string", "HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nmade", :next],
    ["GET /status_599", "HTTP/1.1 599 Unknown\r\ncontent-length: 3\r\n\r\nodd", :next],
    # HEAD: no body, the framing fields still what a GET would get.
    ["HEAD /plain", "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n", :next],
    ["HEAD /stream", "HTTP/1.1 200 OK\r\n\r\n", :next],
    ["HEAD /stream_length", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", :next],
    # The connection field is the server's: it writes it from its own keep-alive decision.
    ["GET /connection_close", "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye", :closed],
    ["GET /connection_keep_alive", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi", :next],
    # Bodies the server frames itself.
    ["GET /plain", "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello", :next],
    ["GET /stream", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", :next],
    ["GET /stream HTTP/1.0", "HTTP/1.0 200 OK\r\n\r\nhello", :closed]
  ].freeze

  # The lowlevel_error_handler's answer to the app's exception is framed by the same rules:
  # [the query string picking what the handler returns (HANDLER below), what the client reads].
  HANDLER_ROWS = [
    ["encoded", "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n" \
                "3\r\nabc\r\n0\r\n\r\n"],
    ["length_and_encoding", REFUSED],
    ["interim", REFUSED],
    ["length_mismatch", REFUSED],
    ["header_injection", REFUSED],
    ["plain", "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy"]
  ].freeze

  HANDLER = <<~RUBY
    answers = {
      "encoded" => [500, { "transfer-encoding" => "chunked" }, ["3\\r\\nabc\\r\\n0\\r\\n\\r\\n"]],
      "length_and_encoding" => [500, { "content-length" => "3", "transfer-encoding" => "chunked" }, ["abc"]],
      "interim" => [103, {}, ["abc"]],
      "length_mismatch" => [500, { "content-length" => "9" }, ["abc"]],
      "header_injection" => [500, { "x" => "a\\r\\nset-cookie: evil=1" }, ["abc"]],
      "plain" => [503, {}, ["busy"]]
    }.freeze
    lowlevel_error_handler { |_error, env, _status| answers.fetch(env["QUERY_STRING"]) }
  RUBY

  Minitest.after_run { puts "response framing: #{ROWS.size + HANDLER_ROWS.size} cases" }

  # One server for every row of a table (the app keeps no state between requests).
  SERVERS = Mutex.new

  def self.server_port(with_handler: false)
    SERVERS.synchronize do
      (@servers ||= {})[with_handler] ||= begin
        args = ["-e", "production", "-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "framing.ru")]
        if with_handler
          conf = File.join(Dir.mktmpdir, "puma.rb")
          File.write(conf, HANDLER)
          args += ["-C", conf]
        end
        ServerProcess.new(args).tap do |s|
          s.boot!
          Minitest.after_run do
            s.kill
            FileUtils.rm_rf(File.dirname(conf)) if conf
          end
        end
      end
      @servers[with_handler].port
    end
  end

  HANDLER_ROWS.each do |answer, bytes|
    define_method("test_handler_#{answer}") do
      sock = connect(self.class.server_port(with_handler: true))
      sock.write("GET /raise?#{answer} HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
      assert_equal bytes, read_until_close(sock), answer
    ensure
      sock&.close
    end
  end

  ROWS.each_with_index do |(request, first, after), i|
    define_method(format("test_%02d_%s", i, request.tr("^A-Za-z0-9", "_").downcase)) do
      line = request.include?(" HTTP/") ? request : "#{request} HTTP/1.1"
      sock = connect(self.class.server_port)
      sock.write("#{line}\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      data = read_until_close(sock)
      assert_equal first + (after == :next ? NEXT : ""), data, request
    ensure
      sock&.close
    end
  end
end
