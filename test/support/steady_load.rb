# frozen_string_literal: true

require "net/http"
require "openssl"
require "socket"

# A steady load for restart tests: client threads send GET requests one after another until
# stopped, and every answer and failure is counted. Keep-alive clients use Net::HTTP (which,
# like browsers and most HTTP libraries, retries an idempotent request once when a reused
# connection turns out closed); the others open a fresh connection per request and never retry.
#
# Bounded: every request has a timeout, and the load stops by itself after `max_seconds`.
# With `tls:` (a CA file) the clients speak HTTPS, verifying the server's certificate with it.
# With `method: "POST"` each request carries a one-byte body (a POST is never retried by
# Net::HTTP, nor by a proxy told not to).
class SteadyLoad
  Failure = Struct.new(:client, :error)

  attr_reader :failures

  def initialize(port, path: "/", keep_alive: 2, fresh: 2, timeout: 20, max_seconds: 90, tls: nil, method: "GET")
    @port = port
    @method = method
    @tls = tls
    @path = path
    @timeout = timeout
    @deadline = now + max_seconds
    @lock = Mutex.new
    @ok = 0
    @bodies = Hash.new(0)
    @failures = []
    @stop = false
    @threads = Array.new(keep_alive) { |i| Thread.new { keep_alive_client("keep-alive #{i}") } } +
               Array.new(fresh) { |i| Thread.new { fresh_client("fresh #{i}") } }
  end

  def ok
    @lock.synchronize { @ok }
  end

  # How many answers had each body so far.
  def bodies
    @lock.synchronize { @bodies.dup }
  end

  # Waits until `count` more requests than now have been answered (bounded); false if not.
  def wait_for_more(count, timeout: 30)
    target = ok + count
    deadline = now + timeout
    sleep 0.02 while ok < target && now < deadline && !@stop
    ok >= target
  end

  # Waits until the block, given the body counts, is true (bounded); false if not.
  def wait_for_bodies(timeout: 30)
    deadline = now + timeout
    sleep 0.02 until yield(bodies) || now > deadline
    yield(bodies)
  end

  # Stops the clients (each finishes its current request) and returns self.
  def stop
    @stop = true
    @threads.each { |t| t.join(@timeout + 5) }
    self
  end

  # For assertion messages.
  def summary
    "#{ok} answered, #{failures.size} failed: #{failures.first(5).map { |f| "#{f.client}: #{f.error}" }.join('; ')}"
  end

  private

  def running?
    !@stop && now < @deadline
  end

  def keep_alive_client(name)
    while running?
      begin
        tls = @tls ? { use_ssl: true, ca_file: @tls, verify_mode: OpenSSL::SSL::VERIFY_PEER } : {}
        Net::HTTP.start("127.0.0.1", @port, open_timeout: @timeout, read_timeout: @timeout, **tls) do |http|
          while running?
            response = @method == "POST" ? http.post(@path, "x", "content-type" => "text/plain") : http.get(@path)
            record(name, response.code.to_i, response.body)
          end
        end
      rescue StandardError => e
        fail_with(name, e)
      end
    end
  end

  def fresh_client(name)
    while running?
      begin
        status, body = fresh_request
        record(name, status, body)
      rescue StandardError => e
        fail_with(name, e)
      end
    end
  end

  def fresh_request
    socket = Socket.tcp("127.0.0.1", @port, connect_timeout: @timeout)
    socket = tls_handshake(socket) if @tls
    body = @method == "POST" ? "Content-Type: text/plain\r\nContent-Length: 1\r\n\r\nx" : "\r\n"
    socket.write("#{@method} #{@path} HTTP/1.1\r\nHost: load\r\nConnection: close\r\n#{body}")
    response = +""
    loop do
      chunk = socket.read_nonblock(65_536, exception: false)
      break if chunk.nil?

      case chunk
      when :wait_readable then raise "no answer within #{@timeout}s" unless socket.to_io.wait_readable(@timeout)
      when :wait_writable then raise "no answer within #{@timeout}s" unless socket.to_io.wait_writable(@timeout)
      else response << chunk
      end
    end
    head, body = response.split("\r\n\r\n", 2)
    [head.to_s[%r{\AHTTP/1\.1 (\d{3})}, 1].to_i, body.to_s]
  ensure
    socket&.close
  end

  # `socket` as a TLS client that verified the server's certificate (bounded).
  def tls_handshake(socket)
    ctx = OpenSSL::SSL::SSLContext.new
    ctx.ca_file = @tls
    ctx.verify_mode = OpenSSL::SSL::VERIFY_PEER
    ssl = OpenSSL::SSL::SSLSocket.new(socket, ctx)
    ssl.sync_close = true
    ssl.hostname = "localhost"
    loop do
      case ssl.connect_nonblock(exception: false)
      when :wait_readable then raise "no handshake within #{@timeout}s" unless socket.wait_readable(@timeout)
      when :wait_writable then raise "no handshake within #{@timeout}s" unless socket.wait_writable(@timeout)
      else return ssl
      end
    end
  rescue StandardError
    socket.close
    raise
  end

  def record(name, status, body)
    return fail_with(name, "status #{status}") unless status == 200

    @lock.synchronize do
      @ok += 1
      @bodies[body] += 1
    end
  end

  def fail_with(name, error)
    @lock.synchronize { @failures << Failure.new(name, error.is_a?(Exception) ? "#{error.class}: #{error.message}" : error) }
    sleep 0.05 # a refused connection must not spin
  end

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end
