# frozen_string_literal: true

require "socket"
require "digest"

# The soak's load (test/test_soak.rb, `make soak`) against test/apps/soak.ru, and the sampler of
# the server's processes. Every answer is checked against what was sent; every wait is bounded.
module Soak
  FILE_BYTES = 300 * 1024

  def self.now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  FILE_DIGEST = Digest::SHA256.hexdigest((0...FILE_BYTES).map { |i| (i % 251).chr }.join)
  # Errors that mean the server closed the connection (what a keep-alive client must expect of
  # a connection it reuses).
  CLOSED = [EOFError, Errno::ECONNRESET, Errno::EPIPE, Errno::ECONNABORTED].freeze

  # The server closed a connection before any byte of the answer came.
  class ClosedEarly < StandardError; end

  # One client connection: raw HTTP/1.1, responses framed by content-length or chunked.
  class Connection
    attr_reader :served

    def initialize(port, timeout)
      @timeout = timeout
      @socket = Socket.tcp("127.0.0.1", port, connect_timeout: timeout)
      @buf = +"".b
      @served = 0
      @open = true
    end

    def open?
      @open
    end

    def close
      @open = false
      @socket.close unless @socket.closed?
    end

    def write(bytes)
      left = bytes
      until left.empty?
        n = @socket.write_nonblock(left, exception: false)
        if n == :wait_writable
          raise "write blocked for #{@timeout}s" unless @socket.wait_writable(@timeout)
        else
          left = left.byteslice(n..)
        end
      end
    end

    # One response: [status, headers, body]. ClosedEarly when the connection ended before any
    # byte of it.
    def read_response
      got_any = !@buf.empty?
      fill = lambda do
        raise "no answer within #{@timeout}s" unless @socket.wait_readable(@timeout)

        chunk = @socket.read_nonblock(65_536, exception: false)
        raise EOFError, "end of stream" if chunk.nil?

        unless chunk == :wait_readable
          @buf << chunk
          got_any = true
        end
      end
      begin
        fill.call until @buf.include?("\r\n\r\n")
        head, rest = @buf.split("\r\n\r\n", 2)
        @buf = rest
        lines = head.split("\r\n")
        status = lines.shift.to_s[%r{\AHTTP/1\.1 (\d{3}) }, 1].to_i
        headers = lines.to_h { |l| k, v = l.split(":", 2); [k.downcase, v.to_s.strip] }
        body = if status == 101 then +""
               elsif headers["transfer-encoding"] == "chunked" then read_chunked(fill)
               else read_length(Integer(headers.fetch("content-length")), fill)
               end
      rescue *CLOSED => e
        raise ClosedEarly, e.message unless got_any

        raise
      end
      @served += 1
      @open = false if headers["connection"]&.casecmp?("close")
      [status, headers, body]
    end

    # The bytes after a 101 head, then whatever comes until `want` bytes are there.
    def read_exactly(want)
      until @buf.bytesize >= want
        raise "no echo within #{@timeout}s" unless @socket.wait_readable(@timeout)

        chunk = @socket.read_nonblock(65_536, exception: false)
        raise EOFError, "end of stream" if chunk.nil?

        @buf << chunk unless chunk == :wait_readable
      end
      @buf.slice!(0, want)
    end

    # True when the server closes the connection (bounded).
    def closed_by_server?
      return false unless @socket.wait_readable(@timeout)

      @socket.read_nonblock(1, exception: false).nil?
    rescue *CLOSED
      true
    end

    # Reads some of a response, then gives up on it (churn).
    def read_some
      @socket.wait_readable(@timeout) && @socket.read_nonblock(rand(1..65_536), exception: false)
    rescue *CLOSED
      nil
    end

    private

    def read_length(length, fill)
      fill.call while @buf.bytesize < length
      @buf.slice!(0, length)
    end

    def read_chunked(fill)
      body = +"".b
      loop do
        fill.call until @buf.include?("\r\n")
        size_line = @buf.slice!(0, @buf.index("\r\n") + 2)
        size = Integer(size_line.strip, 16)
        if size.zero?
          fill.call until @buf.start_with?("\r\n") || @buf.include?("\r\n\r\n")
          @buf.slice!(0, @buf.start_with?("\r\n") ? 2 : @buf.index("\r\n\r\n") + 4)
          return body
        end
        fill.call while @buf.bytesize < size + 2
        body << @buf.slice!(0, size)
        @buf.slice!(0, 2)
      end
    end
  end

  # One request and the check of its answer.
  Request = Struct.new(:kind, :bytes, :check)

  # The mix the load sends; each kind's answer is checked in full.
  module Requests
    module_function

    def pick(rng, id)
      case rng.rand(100)
      when 0...45 then hello(id)
      when 45...57 then upload(rng.bytes(rng.rand(1..16_384)))
      when 57...65 then upload(rng.bytes(rng.rand(120_000..400_000))) # past 112 KiB: spooled to a file
      when 65...75 then chunked(rng)
      when 75...88 then stream(rng.rand(1..200))
      else file
      end
    end

    def hello(id)
      Request.new(:hello, "GET /hello?#{id} HTTP/1.1\r\nHost: soak\r\n\r\n", "hello #{id}")
    end

    def upload(body)
      head = "POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Type: application/octet-stream\r\n" \
             "Content-Length: #{body.bytesize}\r\n\r\n"
      Request.new(body.bytesize > 112 * 1024 ? :upload_spooled : :upload, head.b + body, digest_line(body))
    end

    # A chunked body (always spooled by the server) in pieces of random sizes.
    def chunked(rng)
      body = rng.bytes(rng.rand(1..200_000))
      wire = +"POST /upload HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n".b
      at = 0
      while at < body.bytesize
        piece = body.byteslice(at, rng.rand(1..32_768))
        wire << "#{piece.bytesize.to_s(16)}\r\n".b << piece << "\r\n".b
        at += piece.bytesize
      end
      Request.new(:chunked, wire << "0\r\n\r\n".b, digest_line(body))
    end

    def stream(parts)
      Request.new(:stream, "GET /stream?#{parts} HTTP/1.1\r\nHost: soak\r\n\r\n",
                  Array.new(parts) { |i| "part #{i}\n" }.join)
    end

    def file
      Request.new(:file, "GET /file HTTP/1.1\r\nHost: soak\r\n\r\n", ->(body) { Digest::SHA256.hexdigest(body) == FILE_DIGEST })
    end

    def digest_line(body)
      "#{body.bytesize} #{Digest::SHA256.hexdigest(body)}"
    end

    def good?(request, status, body)
      return false unless status == 200

      request.check.respond_to?(:call) ? request.check.call(body) : body == request.check
    end
  end

  # Client threads that each open a keep-alive connection, send a random number of random
  # requests on it and close it (now and then in the middle of a request or of an answer), and
  # a thread that takes connections over with a hijack and talks on them. Counts every request.
  class Load
    Failure = Struct.new(:client, :kind, :error)

    # Keep-alive connections carry 1..this many requests.
    MAX_PER_CONNECTION = 20
    # Share of requests given up on purpose: half sent, or half read, then the connection closed.
    ABANDON = 0.03

    attr_reader :failures

    def initialize(port, clients: 4, hijackers: 1, timeout: 30, seed: Random.new_seed, max_seconds: 3600)
      @port = port
      @timeout = timeout
      @seed = seed
      @deadline = Soak.now + max_seconds
      @lock = Mutex.new
      @counts = Hash.new(0)
      @kinds = Hash.new(0)
      @failures = []
      @stop = false
      @threads = Array.new(clients) { |i| Thread.new { client("client #{i}", Random.new(seed + i)) } } +
                 Array.new(hijackers) { |i| Thread.new { hijacker("hijack #{i}") } }
    end

    # sent, answered, failed, retried (a reused connection the server had closed: sent again on
    # a new one, as HTTP clients do), abandoned (on purpose), hijacks, hijacks_cut.
    def counts
      @lock.synchronize { @counts.dup }
    end

    def kinds
      @lock.synchronize { @kinds.dup }
    end

    def answered
      counts[:answered]
    end

    # Waits until `count` more requests than now have been answered (bounded); false if not.
    def wait_for_more(count, timeout: 60)
      target = answered + count
      deadline = Soak.now + timeout
      sleep 0.05 while answered < target && Soak.now < deadline
      answered >= target
    end

    def stop
      @stop = true
      @threads.each { |t| t.join(@timeout * 2 + 10) }
      self
    end

    def summary
      Load.summary(counts, kinds, failures)
    end

    def self.summary(c, kinds, failures)
      format("requests sent %d, answered %d, failed %d (retried on a closed keep-alive connection %d, abandoned on purpose %d); " \
             "hijacks %d, cut %d; by kind %s%s",
             c[:sent], c[:answered], c[:failed], c[:retried], c[:abandoned], c[:hijacks], c[:hijacks_cut], kinds.sort.to_h,
             failures.empty? ? "" : "; failures: #{failures.first(5).map { |f| "#{f.client} #{f.kind}: #{f.error}" }.join('; ')}")
    end

    private

    def running?
      !@stop && Soak.now < @deadline
    end

    def client(name, rng)
      id = 0
      while running?
        conn = nil
        begin
          conn = Connection.new(@port, @timeout)
          rng.rand(1..MAX_PER_CONNECTION).times do
            break unless running? && conn.open?

            request = Requests.pick(rng, "#{name.tr(' ', '-')}-#{id += 1}")
            if rng.rand < ABANDON
              abandon(conn, request, rng)
              break
            end
            conn = exchange(name, conn, request)
          end
        rescue StandardError => e
          fail_with(name, :connect, e)
        ensure
          conn&.close
        end
      end
    end

    # Sends `request` and checks its answer; a reused connection found closed before any byte of
    # the answer is replaced and the request sent once more. Returns the connection to go on with.
    def exchange(name, conn, request, retried: false)
      count(:sent) unless retried
      conn.write(request.bytes)
      status, _headers, body = conn.read_response
      if Requests.good?(request, status, body)
        count(:answered)
        @lock.synchronize { @kinds[request.kind] += 1 }
      else
        fail_with(name, request.kind, "status #{status}, body #{body.to_s[0, 80].inspect} (#{body.to_s.bytesize} bytes)")
      end
      conn
    rescue ClosedEarly, *CLOSED => e
      if conn.served.positive? && !retried && (e.is_a?(ClosedEarly) || nothing_read?(e))
        conn.close
        count(:retried)
        return exchange(name, Connection.new(@port, @timeout), request, retried: true)
      end
      fail_with(name, request.kind, e)
      conn.close
      conn
    rescue StandardError => e
      fail_with(name, request.kind, e)
      conn.close
      conn
    end

    # A write that failed (EPIPE, ECONNRESET) came before any answer was read.
    def nothing_read?(error)
      error.is_a?(Errno::EPIPE) || error.is_a?(Errno::ECONNRESET)
    end

    # Half a request, or a whole one with only some of its answer read; then the caller closes.
    def abandon(conn, request, rng)
      count(:abandoned)
      if rng.rand < 0.5
        conn.write(request.bytes.byteslice(0, rng.rand(1...request.bytes.bytesize)))
      else
        conn.write(request.bytes)
        conn.read_some
      end
    rescue StandardError
      nil
    end

    # Full hijacks, one after another: upgrade, a few echoed lines, "bye", the server's close.
    # One open while a hot restart closes everything may be cut (counted, never a failure of a
    # request: the test bounds it by the restarts).
    def hijacker(name)
      n = 0
      while running?
        conn = nil
        begin
          conn = Connection.new(@port, @timeout)
          count(:sent)
          conn.write("GET /ws HTTP/1.1\r\nHost: soak\r\n\r\n")
          status, = conn.read_response
          raise "status #{status}" unless status == 101

          count(:answered)
          count(:hijacks)
          lines = Array.new(3) { |i| "#{name} #{n += 1} line #{i}\n" } << "bye\n"
          lines.each do |line|
            conn.write(line)
            echoed = conn.read_exactly(line.bytesize)
            raise "echo #{echoed.inspect} for #{line.inspect}" unless echoed == line
          end
          raise "not closed after bye" unless conn.closed_by_server?
        rescue ClosedEarly
          # Closed before the 101: soak.ru answers the request at once and writes the 101 from
          # a thread of its own, so a hot restart's exec between the two cuts the hijacked
          # connection before its first byte. The same cut as after the 101, and bounded with
          # those by the hot restarts; the request counts as answered by its hijack.
          count(:answered)
          count(:hijacks_cut)
        rescue *CLOSED
          count(:hijacks_cut)
        rescue StandardError => e
          fail_with(name, :hijack, e)
        ensure
          conn&.close
        end
        sleep 0.05
      end
    end

    def count(key)
      @lock.synchronize { @counts[key] += 1 }
    end

    def fail_with(name, kind, error)
      message = error.is_a?(Exception) ? "#{error.class}: #{error.message}" : error
      @lock.synchronize do
        @counts[:failed] += 1
        @failures << Failure.new(name, kind, message)
      end
      sleep 0.05 # a refused connection must not spin
    end
  end

  # One process's numbers at one moment.
  Sample = Struct.new(:at, :role, :pid, :rss_kib, :pss_kib, :fds, :threads)

  # Samples a server's processes (by role: "master", "worker N", or "server" in single mode)
  # from /proc at intervals on a thread of its own.
  class Sampler
    attr_reader :samples

    # `roles` is called at each sample and gives { role => pid }.
    def initialize(interval:, &roles)
      @interval = interval
      @roles = roles
      @samples = []
      @lock = Mutex.new
      @stop = false
      @started = Soak.now
      @thread = Thread.new { run }
    end

    def stop
      @stop = true
      @thread.join(@interval + 5)
      self
    end

    # Seconds since the sampler started (what samples' `at` count).
    def elapsed
      Soak.now - @started
    end

    # Samples taken from `from` seconds after the start on.
    def since(from)
      @lock.synchronize { @samples.select { |s| s.at >= from } }
    end

    # The processes' summed RSS and PSS (KiB) at each sample time since `from`: [[at, rss, pss]].
    def totals(from: 0)
      since(from).group_by(&:at).map { |at, group| [at, group.sum(&:rss_kib), group.sum(&:pss_kib)] }
    end

    def self.read(role, pid, at)
      status = File.read("/proc/#{pid}/status")
      pss = begin
        File.read("/proc/#{pid}/smaps_rollup")[/^Pss:\s+(\d+)/, 1].to_i
      rescue SystemCallError
        0
      end
      Sample.new(at, role, pid, status[/^VmRSS:\s+(\d+)/, 1].to_i, pss,
                 Dir.children("/proc/#{pid}/fd").size, Dir.children("/proc/#{pid}/task").size)
    rescue SystemCallError
      nil # the process ended between listing and reading
    end

    # { role => [fds, threads] } now.
    def self.counts(roles)
      roles.filter_map { |role, pid| (s = read(role, pid, 0)) && [role, [s.fds, s.threads]] }.to_h
    end

    private

    def run
      until @stop
        at = (Soak.now - @started).round(1)
        taken = @roles.call.filter_map { |role, pid| Sampler.read(role, pid, at) }
        @lock.synchronize { @samples.concat(taken) }
        deadline = Soak.now + @interval
        sleep 0.05 while !@stop && Soak.now < deadline
      end
    end
  end
end
