# frozen_string_literal: true

# Raw-socket HTTP for tests: write exact bytes, read exact responses, every wait bounded.
module HttpClient
  Response = Struct.new(:status, :version, :headers, :body, :raw, keyword_init: true) do
    def [](name)
      headers[name.downcase]
    end
  end

  # One line from `sock` (bounded: raises saying it waited for `what`), nil at the end of the
  # stream.
  def read_line(sock, timeout: 10, what: "a line")
    line = +""
    until line.end_with?("\n")
      raise "timed out waiting for #{what} (got #{line.inspect})" unless sock.wait_readable(timeout)

      byte = sock.read_nonblock(1, exception: false)
      return nil if byte.nil?

      line << byte unless byte == :wait_readable
    end
    line
  end

  def connect(port, host: "127.0.0.1")
    Socket.tcp(host, port, connect_timeout: 5)
  end

  # Waits until nothing listens on `port` any more (a stopping server closed its listeners):
  # each probe connection that still gets through is closed again at once. A probe reset by
  # the kernel was still in the backlog when the listener closed: that is the same news.
  def wait_until_refused(port, timeout: 10)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      connect(port).close
      raise "port #{port} still accepts after #{timeout} s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.02
    end
  rescue Errno::ECONNREFUSED, Errno::ECONNRESET
    nil
  end

  # Sends `raw` on a new connection and reads one response.
  def raw_request(port, raw, timeout: 10)
    sock = connect(port)
    sock.write(raw)
    read_response(sock, timeout: timeout)
  ensure
    sock&.close
  end

  # Reads everything until the server closes the connection.
  def read_until_close(sock, timeout: 10)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    data = +""
    loop do
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      raise "timed out reading (got #{data.inspect[0, 300]})" if left <= 0
      next unless sock.wait_readable(left)

      data << sock.readpartial(65_536)
    end
  rescue EOFError, Errno::ECONNRESET
    data
  end

  # Reads one response (head, then body framed by content-length, chunked, or close).
  def read_response(sock, timeout: 10, head_request: false)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    @pending ||= {}
    buf = @pending.delete(sock) || +""
    read_more = lambda do
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      raise "timed out reading a response (got #{buf.inspect[0, 300]})" if left <= 0
      raise "timed out reading a response (got #{buf.inspect[0, 300]})" unless sock.wait_readable(left)

      buf << sock.readpartial(65_536)
    end
    read_more.call until buf.include?("\r\n\r\n")
    head, rest = buf.split("\r\n\r\n", 2)
    lines = head.split("\r\n")
    version, status = lines.shift.split(" ", 3)
    # Every test reading a response also checks it starts like one (a lost or extra byte shows).
    raise "not an HTTP response: #{head.inspect[0, 300]}" unless version&.match?(%r{\AHTTP/1\.[01]\z}) && status&.match?(/\A\d{3}\z/)

    headers = {}
    lines.each do |line|
      name, value = line.split(":", 2)
      key = name.downcase
      headers[key] = headers.key?(key) ? "#{headers[key]}\n#{value.strip}" : value.strip
    end
    buf = rest
    body = +""
    status = status.to_i
    if head_request || status == 204 || status == 304 || status < 200
      nil
    elsif headers["transfer-encoding"]&.include?("chunked")
      loop do
        read_more.call until buf.include?("\r\n")
        size_line, buf = buf.split("\r\n", 2)
        size = size_line.to_i(16)
        if size.zero?
          read_more.call until buf.include?("\r\n")
          buf = buf.split("\r\n", 2)[1]
          break
        end
        read_more.call while buf.bytesize < size + 2
        body << buf.byteslice(0, size)
        buf = buf.byteslice(size + 2..)
      end
    elsif headers["content-length"]
      length = headers["content-length"].to_i
      read_more.call while buf.bytesize < length
      body = buf.byteslice(0, length)
      buf = buf.byteslice(length..)
    else
      body = buf + read_until_close(sock, timeout: [deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC), 0.1].max)
      buf = +""
    end
    @pending[sock] = buf unless buf.empty?
    Response.new(status: status, version: version, headers: headers, body: body, raw: head)
  end

  def get(port, path, headers: {})
    raw = +"GET #{path} HTTP/1.1\r\nHost: 127.0.0.1:#{port}\r\nConnection: close\r\n"
    headers.each { |k, v| raw << "#{k}: #{v}\r\n" }
    raw_request(port, raw << "\r\n")
  end
end
