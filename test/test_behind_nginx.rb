# frozen_string_literal: true

require "helper"
require "nginx"
require "smuggling_table"

# Behind nginx (Debian's, proxying with upstream keep-alive: `keepalive`, HTTP/1.1, no
# Connection header passed on), no smuggling vector desynchronises the connection between
# nginx and Catamount: each row of test/support/smuggling_table.rb goes to nginx with a
# request pipelined behind it, then a normal request follows on a new client connection, which
# nginx sends over its kept upstream connection. The follow-up must get its own answer, and the
# app (counting.ru) must never see a request the client did not send as one.
class TestBehindNginx < Minitest::Test
  include Support::ServerTest
  include Support::Nginx
  include Smuggling::Check
  parallelize_me!

  def test_no_vector_desynchronises_an_upstream_keep_alive_connection
    Dir.mktmpdir do |dir|
      server = start_server(app: "counting.ru")
      port = start_nginx(dir, server.port)
      desyncs = []
      statuses = Hash.new(0)
      upstream = []
      Smuggling::ROWS.each_with_index do |(what, raw), i|
        statuses[send_vector(port, raw)] += 1
        follow = "/follow/#{i}"
        response = begin
          get(port, follow)
        rescue RuntimeError => e
          e.message
        end
        upstream |= upstream_connections(server.port)
        problem = desync(raw, follow, response, calls_since_last_check(server.port))
        desyncs << "#{what}: #{problem}" if problem
      end
      puts "\n#{Smuggling::ROWS.size} vectors tried behind nginx, #{desyncs.size} desyncs found; nginx answered " \
           "#{statuses.sort.map { |s, n| "#{s}: #{n}" }.join(', ')}; #{upstream.size} upstream connections seen"
      assert_empty desyncs, desyncs.join("\n")
      assert_operator upstream.size, :<, Smuggling::ROWS.size / 2, "nginx hardly reused its upstream connections"
    end
  end

  private

  # Sends the row and a pipelined request behind it; returns the status nginx answered first
  # (or what happened instead). Reads until nginx closes or has answered both requests: a
  # connection it keeps open with fewer answers is closed after a few seconds.
  def send_vector(port, raw)
    sock = connect(port)
    answer = send_row(sock, raw + Smuggling::PIPELINED, false)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
    until complete_answers(answer) >= 2
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      break if left <= 0 || !sock.wait_readable(left)

      answer << sock.readpartial(65_536)
    end
    first_status(answer)
  rescue EOFError, Errno::ECONNRESET
    first_status(answer)
  ensure
    sock&.close
  end

  def first_status(answer)
    answer[%r{\AHTTP/1\.[01] (\d{3})}, 1] || (answer.empty? ? "nothing" : "not HTTP")
  end

  # How many whole responses `data` holds (nginx frames its answers with content-length).
  def complete_answers(data)
    count = 0
    rest = data
    while (head_end = rest.index("\r\n\r\n"))
      length = rest[0, head_end][/^content-length: *(\d+)\r?$/i, 1].to_i
      break if rest.bytesize < head_end + 4 + length

      count += 1
      rest = rest.byteslice(head_end + 4 + length..)
    end
    count
  end

  # Nil when the follow-up got its own answer and the app saw only requests the client sent:
  # the row's own (at most one, with the row's method, never the request hidden in its body),
  # the pipelined one (at most once) and the follow-up (once).
  def desync(raw, follow, response, seen)
    problems = []
    unless response.is_a?(HttpClient::Response) && response.status == 200 && response.body == "seen #{follow}"
      problems << "the follow-up got #{response.is_a?(HttpClient::Response) ? [response.status, response.body] : response}"
    end
    follows, others = seen.partition { |c| c == "GET #{follow} 0" }
    pipelined, own = others.partition { |c| c.start_with?("GET #{Smuggling::PIPELINED[/ (\S+) /, 1]} ") }
    method = raw[/\A\S+/]
    problems << "the follow-up reached the app #{follows.size} times" unless follows.size == 1
    if pipelined.size > 1 || own.size > 1 || own.any? { |c| !c.start_with?("#{method} ") || c.include?("hidden") }
      problems << "the app saw #{seen.inspect}"
    end
    problems.join(", ") unless problems.empty?
  end

  # The local ports of nginx's connections to `port` (kept ones stay established between
  # requests): fewer than the requests sent shows the connections were reused.
  def upstream_connections(port)
    IO.popen(["ss", "-Htn", "state", "established", "dport = :#{port}"], &:read)
      .scan(/127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:#{port}\b/).flatten
  end
end
