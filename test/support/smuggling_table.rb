# frozen_string_literal: true

require "openssl"
require "timeout"

# The request smuggling table (one row per vector) and the check each row gets, shared by
# test/test_smuggling.rb's runs (whole writes, one byte per write, over TLS): the rows are
# defined once here, each run only says how the bytes travel.
module Smuggling
  # Behind every row: if the server read past the row's end as a new request, its answer or
  # its call would show.
  PIPELINED = "GET /pipelined HTTP/1.1\r\nHost: x\r\n\r\n"
  HIDDEN = "GET /hidden HTTP/1.1\r\nHost: x\r\n\r\n"

  def self.post(fields, body = "")
    "POST /p HTTP/1.1\r\nHost: x\r\n#{fields}\r\n#{body}"
  end

  def self.chunked(body)
    post("Transfer-Encoding: chunked\r\n", body)
  end

  # [what, raw bytes, expected status, calls the app must see ("METHOD REQUEST_URI body-size")]
  # Rows answered 2xx end with Connection: close, so the pipelined request must go unanswered
  # for them too.
  ROWS = [
    # Controls: well-framed requests carrying request-looking bytes as data are served once.
    ["a body that looks like a request", post("Content-Length: #{HIDDEN.bytesize}\r\nConnection: close\r\n", HIDDEN), 200,
     ["POST /p #{HIDDEN.bytesize}"]],
    ["chunked body that looks like a request", post("Transfer-Encoding: chunked\r\nConnection: close\r\n",
                                                    "#{HIDDEN.bytesize.to_s(16)}\r\n#{HIDDEN}\r\n0\r\n\r\n"), 200, ["POST /p #{HIDDEN.bytesize}"]],
    ["Content-Length with OWS around it", post("Content-Length:  5 \t\r\nConnection: close\r\n", "hello"), 200, ["POST /p 5"]],
    ["Transfer-Encoding in any case with spaces", post("transfer-encoding:  CHUNKED  \r\nConnection: close\r\n", "5\r\nhello\r\n0\r\n\r\n"), 200,
     ["POST /p 5"]],

    # CL.TE and TE.CL: both framings named; neither is chosen.
    ["CL.TE", post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG"), 400],
    ["TE.CL", post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "5c\r\n#{HIDDEN}0\r\n\r\n"), 400],
    ["CL.TE with CL 0", post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400],
    ["TE.CL with TE in a later field", post("Content-Length: 4\r\nX: y\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400],

    # TE.TE: a Transfer-Encoding one parser would ignore and another obey.
    ["duplicate Transfer-Encoding fields", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400],
    ["chunked twice in one field", post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"), 400],
    ["space before the colon of Transfer-Encoding", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"), 400],
    ["tab before the colon of Transfer-Encoding", post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"), 400],
    ["xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), 400],
    ["chunked with a trailing letter", post("Transfer-Encoding: chunkedx\r\n", "0\r\n\r\n"), 400],
    ["quoted chunked", post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"), 400],
    ["chunked with a parameter", post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"), 400],
    ["chunked not last", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"), 400],
    ["chunked, identity", post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"), 400],
    ["chunked then identity in a second field", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "0\r\n\r\n"), 400],
    ["identity alone", post("Transfer-Encoding: identity\r\n", "0\r\n\r\n"), 400],
    ["empty Transfer-Encoding", post("Transfer-Encoding: \r\n", "0\r\n\r\n"), 400],
    ["tab before chunked (Puma refuses it too)", post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n"), 400],
    ["tab after chunked (llhttp refuses it)", post("Transfer-Encoding: chunked\t\r\n", "0\r\n\r\n"), 400],
    ["vertical tab before chunked", post("Transfer-Encoding: \vchunked\r\n", "0\r\n\r\n"), 400],
    ["a coding before chunked is not implemented", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), 501],
    ["Transfer-Encoding on HTTP/1.0", "POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400],

    # Content-Length: one field, one plain decimal number. Identical duplicates and lists
    # (which RFC 9110 §8.6 lets a recipient fold into one) are refused too.
    ["two Content-Lengths that differ", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), 400],
    ["two identical Content-Lengths", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), 400],
    ["Content-Length list of identical values", post("Content-Length: 5, 5\r\n", "hello"), 400],
    ["Content-Length list without a space", post("Content-Length: 5,5\r\n", "hello"), 400],
    ["Content-Length list of different values", post("Content-Length: 5, 6\r\n", "hello!"), 400],
    ["Content-Length with a plus sign", post("Content-Length: +5\r\n", "hello"), 400],
    ["Content-Length negative", post("Content-Length: -5\r\n", "hello"), 400],
    ["Content-Length in hex", post("Content-Length: 0x5\r\n", "hello"), 400],
    ["Content-Length with inner space", post("Content-Length: 1 0\r\n", "helloworld"), 400],
    ["tab before the Content-Length value (Puma refuses it too)", post("Content-Length:\t5\r\n", "hello"), 400],
    ["Content-Length with a vertical tab", post("Content-Length: 5\v\r\n", "hello"), 400],
    ["Content-Length with a decimal point", post("Content-Length: 5.0\r\n", "hello"), 400],
    ["Content-Length empty", post("Content-Length: \r\n", "hello"), 400],
    ["Content-Length of 20 digits overflowing 64 bits", post("Content-Length: 99999999999999999999\r\n", "hello"), 400],
    ["Content-Length over the configured body limit", post("Content-Length: 1001\r\n", "hello"), 413],
    ["space before the colon of Content-Length", post("Content-Length : 5\r\n", "hello"), 400],

    # Chunk sizes: hex digits only, nothing before them, within 64 bits.
    ["chunk size with a plus sign", chunked("+5\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk size with 0x", chunked("0x5\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk size with a leading space", chunked(" 5\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk size with a trailing space", chunked("5 \r\nhello\r\n0\r\n\r\n"), 400],
    ["space between chunk size and extension", chunked("5 ;a=b\r\nhello\r\n0\r\n\r\n"), 400],
    ["tab between chunk size and extension", chunked("5\t;a=b\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk size negative", chunked("-5\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk size of 20 hex digits", chunked("10000000000000000005\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk size empty", chunked("\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk data longer than its size", chunked("3\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk size over the configured body limit", chunked("3ea\r\n#{'x' * 1002}\r\n0\r\n\r\n"), 413],
    ["bare LF after a chunk size", chunked("5\nhello\r\n0\r\n\r\n"), 400],
    ["bare LF after chunk data", chunked("5\r\nhello\n0\r\n\r\n"), 400],
    ["bare LF ending the last chunk", chunked("5\r\nhello\r\n0\n\n"), 400],
    ["bare CR after a chunk size", chunked("5\rhello\r\n0\r\n\r\n"), 400],
    ["oversize chunk extension", chunked("5;#{'e' * 5000}\r\nhello\r\n0\r\n\r\n"), 400],
    ["chunk extensions over the total limit", chunked("1;#{'e' * 3000}\r\nh\r\n" * 6 + "0\r\n\r\n"), 400],
    ["space after the ; of a chunk extension (llhttp refuses it)", chunked("5; a=b\r\nhello\r\n0\r\n\r\n"), 400],
    ["space before the = of a chunk extension (llhttp refuses it)", chunked("5;a =b\r\nhello\r\n0\r\n\r\n"), 400],
    ["malformed chunk extension", chunked("5;=\r\nhello\r\n0\r\n\r\n"), 400],
    ["oversize trailer", chunked("5\r\nhello\r\n0\r\nT: #{'t' * 17_000}\r\n\r\n"), 400],
    ["malformed trailer line", chunked("5\r\nhello\r\n0\r\nno colon\r\n\r\n"), 400],
    ["Content-Length in a trailer (llhttp refuses it)", chunked("5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"), 400],
    ["Transfer-Encoding in a trailer", chunked("5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400],
    ["Connection: close in a trailer (llhttp obeys it)", chunked("5\r\nhello\r\n0\r\nConnection: close\r\n\r\n"), 400],
    ["obs-fold in a trailer", chunked("5\r\nhello\r\n0\r\nT: a\r\n b\r\n\r\n"), 400],

    # Line structure of the head.
    ["bare LF line ends", "GET / HTTP/1.1\nHost: x\n\n", 400],
    ["bare LF ending one header line", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400],
    ["bare LF ending the head", "GET / HTTP/1.1\r\nHost: x\r\n\n", 400],
    ["bare CR line ends", "GET / HTTP/1.1\rHost: x\r\r", 400],
    ["bare CR inside a value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400],
    ["bare CR inside the request line", "GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["obs-fold with a space", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400],
    ["obs-fold with a tab", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n", 400],
    ["obs-fold hiding a Transfer-Encoding", post("X: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "hello"), 400],
    ["first header line starting with a space", "GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400],
    ["NUL in a name", "GET / HTTP/1.1\r\nHost: x\r\nX\0Y: v\r\n\r\n", 400],
    ["NUL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n", 400],
    ["control 0x01 in a value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400],
    ["DEL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x7Fb\r\n\r\n", 400],
    ["escape in a value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\eb\r\n\r\n", 400],
    ["vertical tab in a name", "GET / HTTP/1.1\r\nHost: x\r\nX\vY: v\r\n\r\n", 400],
    ["form feed in a name", "GET / HTTP/1.1\r\nHost: x\r\nX\fY: v\r\n\r\n", 400],
    ["space inside a name", "GET / HTTP/1.1\r\nHost: x\r\nX Y: v\r\n\r\n", 400],
    ["space before the colon", "GET / HTTP/1.1\r\nHost: x\r\nX : v\r\n\r\n", 400],
    ["tab before the colon", "GET / HTTP/1.1\r\nHost: x\r\nX\t: v\r\n\r\n", 400],
    ["empty name", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400],
    ["no colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400],
    ["NUL in the target", "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["tab between method and target", "GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["two spaces after the method", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["space after the version", "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400],
    ["no Host on HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400],
    ["two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],

    # Targets.
    ["absolute-form", "GET http://h/p?q=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 200, ["GET http://h/p?q=1 0"]],
    ["OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200, ["OPTIONS * 0"]],
    ["GET *", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["POST *", post("Content-Length: 0\r\n").sub("/p", "*"), 400],
    ["authority-form on GET", "GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["absolute-form with a fragment right after the authority (llhttp refuses it)", "GET http://h#/p HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["absolute-form with a space in it", "GET http://h /p HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["target too long", "GET /#{'a' * 12_300} HTTP/1.1\r\nHost: x\r\n\r\n", 414],
    ["header name too long", "GET / HTTP/1.1\r\nHost: x\r\n#{'N' * 257}: v\r\n\r\n", 431],
    ["too many headers", "GET / HTTP/1.1\r\nHost: x\r\n#{(1..201).map { |i| "H#{i}: v\r\n" }.join}\r\n", 431],

    # Versions and methods.
    ["HTTP/2 preface on the HTTP/1 port", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505],
    ["HTTP/1.2 (RFC 9112 §2.3 would serve it as 1.1; llhttp refuses it)", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505],
    ["HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505],
    ["HTTP/1.10", "GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400],
    ["lower-case version", "GET / http/1.1\r\nHost: x\r\n\r\n", 400],
    ["HTTP/0.9 request line", "GET /\r\n\r\n", 400],
    ["unknown method", "FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501],
    ["lower-case method", "get / HTTP/1.1\r\nHost: x\r\n\r\n", 501]
  ].freeze

  # Checks one row against a server started with test/apps/counting.ru and
  # `http_content_length_limit 1000`. Include beside Support::ServerTest.
  module Check
    # One row: nil when it behaved, else what went wrong. `sock` is connected (plain or TLS);
    # `calls_port` a plain port of the same server, for GET /calls. `bytewise`: one byte per
    # write, stopping once the server answered (what it did not read is discarded).
    def check_row(sock, calls_port, row, bytewise: false)
      what, raw, status, calls = row
      calls ||= []
      early = send_row(sock, raw + PIPELINED, bytewise)
      problems = []
      data = begin
        early + read_to_end(sock, timeout: 5)
      rescue RuntimeError => e
        problems << "the connection stayed open (#{e.message[0, 200]})"
        ""
      end
      answers = data.scan(%r{^HTTP/1\.[01] \d{3} }).size
      seen = calls_since_last_check(calls_port)
      problems << "answered #{data[0, 40].inspect}, not #{status}" unless data.start_with?("HTTP/1.1 #{status} ")
      problems << "#{answers} answers" unless answers == 1
      problems << "no connection: close" if status >= 400 && !data.match?(/^connection: close\r$/i)
      problems << "the app saw #{seen.inspect}, not #{calls.inspect}" unless seen == calls
      "#{what}: #{problems.join(', ')}" unless problems.empty?
    ensure
      sock&.close
    end

    # A plain socket with TCP_NODELAY, so each write of one byte goes out as a segment of its own.
    def connect_nodelay(port)
      sock = connect(port)
      sock.setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1)
      sock
    end

    # A TLS client to `port` trusting `dir`/ca.pem (test/support/certificates.rb).
    def connect_tls(port, dir)
      ctx = OpenSSL::SSL::SSLContext.new
      ctx.ca_file = "#{dir}/ca.pem"
      ctx.verify_mode = OpenSSL::SSL::VERIFY_PEER
      ssl = OpenSSL::SSL::SSLSocket.new(connect_nodelay(port), ctx)
      ssl.hostname = "localhost"
      ssl.sync_close = true
      ssl.sync = true
      Timeout.timeout(20) { ssl.connect }
      ssl
    end

    def calls_since_last_check(port)
      r = get(port, "/calls")
      raise "GET /calls answered #{r.status}" unless r.status == 200

      r.body.lines(chomp: true)
    end

    private

    # Sends `bytes`; returns what the server answered meanwhile. One byte per write stops at the
    # first answer (a refused request may be answered, and the rest discarded, before the row is
    # all sent): a TLS session's tickets make its socket readable with no answer yet, so only
    # application data counts.
    def send_row(sock, bytes, bytewise)
      unless bytewise
        sock.write(bytes)
        return +""
      end
      answer = +""
      bytes.each_byte do |b|
        if IO.select([sock.to_io], nil, nil, 0)
          chunk = sock.read_nonblock(65_536, exception: false)
          break if chunk.nil?

          answer << chunk if chunk.is_a?(String)
          break unless answer.empty?
        end
        sock.write(b.chr)
      end
      answer
    rescue Errno::EPIPE, Errno::ECONNRESET, OpenSSL::SSL::SSLError
      answer || +""
    end

    # Everything until the server closes (plain or TLS), waiting at most `timeout` in all.
    def read_to_end(sock, timeout:)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      data = +""
      loop do
        chunk = sock.read_nonblock(65_536, exception: false)
        case chunk
        when nil then return data
        when :wait_readable
          left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
          raise "timed out reading (got #{data.inspect[0, 300]})" if left <= 0

          IO.select([sock.to_io], nil, nil, left)
        else data << chunk
        end
      end
    rescue EOFError, Errno::ECONNRESET, OpenSSL::SSL::SSLError
      data
    end
  end
end
