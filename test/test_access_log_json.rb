# frozen_string_literal: true

require "helper"
require "open3"

# The JSON access log (`log_requests :json`): one object a line on stdout, each line read back
# by Debian's jq (script/bootstrap installs it), which checks that it parses and that every
# field has its type; the values are then compared with what each request was. App: kitchen.ru.
class TestAccessLogJson < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  UUID = /\A\h{8}-\h{4}-4\h{3}-[89ab]\h{3}-\h{12}\z/

  # jq fails (exit 5) on a line that is not JSON or whose fields are not of their types, else
  # prints the line again, one object a line.
  JQ_CHECK = <<~JQ
    if (.time | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z$"))
       and (.method | type == "string") and (.path | type == "string")
       and ((.query | type) as $t | $t == "string" or $t == "null")
       and ((.status | type) as $t | $t == "number" or $t == "null")
       and ((.bytes | type) as $t | $t == "number" or $t == "null")
       and (.duration | type == "number") and (.queue | type == "number")
       and (.duration >= 0) and (.queue >= 0)
       and (.remote_addr | type == "string") and (.request_id | type == "string")
       and (.http | test("^HTTP/1[.][01]$"))
       and ((.port | type) as $t | $t == "number" or $t == "null")
       and (.pid | type == "number")
    then . else error("fields of the wrong type: \\(.)") end
  JQ

  # Boots kitchen.ru with a config file saying `log_requests :json` (and `extra`).
  def json_server(*args, extra: "", app: "kitchen.ru")
    dir = Dir.mktmpdir
    (@dirs ||= []) << dir
    conf = File.join(dir, "puma.rb")
    File.write(conf, "log_requests :json\n#{extra}")
    start_server("-C", conf, "-b", "tcp://127.0.0.1:0", *args, app: app)
  end

  def teardown
    super
    (@dirs || []).each { |d| FileUtils.rm_rf(d) }
  end

  # Waits for `count` JSON lines, passes them all through jq, returns them parsed.
  def json_lines(server, count)
    wait_until(timeout: 15) { access_lines(server).size >= count }
    lines = access_lines(server)
    assert_equal count, lines.size, "one line per request:\n#{lines.join}"
    out, err, status = Open3.capture3("jq", "-c", JQ_CHECK, stdin_data: lines.join, binmode: true)
    assert status.success?, "jq refused the log (#{err}):\n#{lines.join}"
    parsed = out.force_encoding(Encoding::UTF_8).lines.map { |l| JSON.parse(l) }
    assert_equal count, parsed.size
    parsed
  end

  def access_lines(server)
    server.stdout.b.lines.select { |l| l.start_with?("{") }
  end

  def request(sock, raw)
    sock.write(raw)
    read_response(sock)
  end

  # One keep-alive connection carrying several requests (a GET with a query, a POST with a
  # body, a 404, a request with its own X-Request-Id), then a 500 from a raising app: a line
  # each, in order, with what was sent; the ids the app saw are the ids logged.
  def test_each_request_gets_a_line_with_its_fields
    server = json_server
    sock = connect(server.port)
    with_query = request(sock, "GET /env?x=1&y=%22 HTTP/1.1\r\nHost: x\r\n\r\n")
    posted = request(sock, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    missing = request(sock, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    own_id = request(sock, "GET /env HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-42/abc\r\n\r\n")
    long_id = request(sock, "GET /env HTTP/1.1\r\nHost: x\r\nX-Request-Id: #{'a' * 256}\r\n\r\n")
    sock.close
    boom = get(server.port, "/boom")
    assert_equal [200, 200, 404, 200, 200, 500], [with_query, posted, missing, own_id, long_id, boom].map(&:status)

    lines = json_lines(server, 6)
    assert_equal %w[GET POST GET GET GET GET], lines.map { |l| l["method"] }
    assert_equal %w[/env /echo /nope /env /env /boom], lines.map { |l| l["path"] }
    assert_equal ["x=1&y=%22", nil, nil, nil, nil, nil], lines.map { |l| l["query"] }
    assert_equal [200, 200, 404, 200, 200, 500], lines.map { |l| l["status"] }
    assert_equal [with_query.body.bytesize, 5, 9, own_id.body.bytesize, long_id.body.bytesize],
                 lines.first(5).map { |l| l["bytes"] }
    assert_nil lines[5]["bytes"], "the server's 500 replaced the app's response"
    lines.each do |l|
      assert_equal "127.0.0.1", l["remote_addr"]
      assert_equal "HTTP/1.1", l["http"]
      assert_equal server.port, l["port"]
      assert_equal server.pid, l["pid"]
      assert_operator l["duration"], :>=, l["queue"]
    end

    seen = [with_query, own_id, long_id].map { |r| JSON.parse(r.body)["HTTP_X_REQUEST_ID"] }
    assert_match UUID, seen[0], "a request without an id is given one"
    assert_equal "req-42/abc", seen[1], "a sane id is kept"
    assert_match UUID, seen[2], "an over-long id is replaced"
    assert_equal seen, [lines[0], lines[3], lines[4]].map { |l| l["request_id"] }
    ids = lines.map { |l| l["request_id"] }
    assert_equal ids.size, ids.uniq.size
  end

  # A backslash in a path, quotes and backslashes in a request id, bytes that are not UTF-8 in
  # a header-given REMOTE_ADDR (quotes in a target are refused with 400, as Puma does):
  # the line stays one valid JSON object and says them (the bytes as U+FFFD). A control byte
  # or non-ASCII byte in a target is refused before the app (400): no line, nothing broken.
  def test_values_are_escaped
    server = json_server(extra: "set_remote_address header: 'x-client'\n")
    assert_equal 404, raw_request(server.port, "GET /back\\slash HTTP/1.1\r\nHost: x\r\nX-Request-Id: q\"uo\\te\r\n\r\n").status
    assert_equal 404, raw_request(server.port, "GET /x HTTP/1.1\r\nHost: x\r\nX-Client: \xff\xfe1, 10.0.0.1\r\n\r\n".b).status
    assert_equal 400, raw_request(server.port, "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n").status
    assert_equal 400, raw_request(server.port, "GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n".b).status
    assert_equal 200, get(server.port, "/").status

    lines = json_lines(server, 3)
    assert_equal ["/back\\slash", "/x", "/"], lines.map { |l| l["path"] }
    assert_equal "q\"uo\\te", lines[0]["request_id"]
    assert_equal "\u{fffd}\u{fffd}1", lines[1]["remote_addr"]
    assert_equal "127.0.0.1", lines[2]["remote_addr"], "no header: the peer"
  end

  # A cluster's workers write their own lines to the one stdout: whole lines, each with the
  # pid of the worker that served it.
  def test_a_cluster_logs_from_its_workers
    server = json_server("-w", "2")
    2.times { |i| server.wait_for(/Worker #{i} \(PID: \d+\) booted/) }
    workers = server.stdout.scan(/Worker \d+ \(PID: (\d+)\) booted/).flatten.map(&:to_i)
    8.times { |i| assert_equal 200, get(server.port, "/?n=#{i}").status }
    lines = json_lines(server, 8)
    assert_equal (0...8).map { |i| "n=#{i}" }, lines.map { |l| l["query"] }.sort_by { |q| q[2..].to_i }
    lines.each { |l| assert_includes workers, l["pid"] }
  end

  # A full hijack has no status or length of the server's: both null.
  def test_a_hijacked_request_has_null_status_and_bytes
    server = json_server(app: "hijack.ru")
    sock = connect(server.port)
    sock.write("GET /echo HTTP/1.1\r\nHost: x\r\n\r\nquit")
    read_until_close(sock)
    sock.close
    line = json_lines(server, 1).first
    assert_equal ["/echo", nil, nil], [line["path"], line["status"], line["bytes"]]
  end

  # Without `:json`, `-v` keeps Puma's plain line.
  def test_the_default_line_stays_plain
    server = start_server("-v")
    get(server.port, "/")
    server.wait_for(%r{^127\.0\.0\.1 - - \[[^\]]+\] "GET / HTTP/1\.1" 200 - \d+\.\d{4}$})
    assert_empty access_lines(server)
  end
end
