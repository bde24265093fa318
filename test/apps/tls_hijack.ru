# frozen_string_literal: true

# The app of test/test_tls_hijack.rb, served over `ssl://`: connections taken with
# `env["rack.hijack"]`, talked on from a thread of the app's own (the pool thread is free).
#   /echo         greets with the IO's class, echoes until "quit", then closes first
#   /until-end    reads until the client's side ends, then says how much it read and closes
#   /bulk?N       waits until GET /release, reads N bytes, then writes N bytes of a pattern and
#                 the SHA-256 of what it read, then closes
#   /release      lets the waiting /bulk go on
#   /flood?N      writes N bytes of the pattern (non-blocking writes, waiting while the socket
#                 takes nothing); the first wait longer than 2 s is reported to /held
#   /held         how much /flood had written when it was first held up that long
#   /ended        what /until-end saw, once it saw it
#   /stats        Catamount.stats
#   /             a plain response
require "digest"
require "json"
require "timeout"

RELEASE = Queue.new
ENDED = Queue.new
HELD = Queue.new

# One 64 KiB piece of the pattern /bulk writes (the tests build the same).
PIECE = (0...65_536).map { |i| (i % 251).chr }.join.b.freeze

def echo(io)
  io.write("hello from #{io.class}\n")
  data = +""
  data << io.readpartial(4096) until data.end_with?("quit")
  io.write(data)
rescue EOFError, IOError, SystemCallError
  nil
ensure
  io.close
end

def until_end(io)
  got = 0
  ended = begin
    loop { got += io.readpartial(65_536).bytesize }
  rescue EOFError
    "read #{got}"
  rescue IOError, SystemCallError => e
    e.class.name
  end
  begin
    io.write("read #{got} bytes, then the end")
  rescue IOError, SystemCallError
    nil # the client is gone altogether
  end
  ENDED << ended
ensure
  io.close
end

def bulk(io, size)
  Timeout.timeout(60) { RELEASE.pop }
  digest = Digest::SHA256.new
  left = size
  while left.positive?
    data = io.readpartial([left, 65_536].min)
    digest << data
    left -= data.bytesize
  end
  left = size
  while left.positive?
    piece = left >= PIECE.bytesize ? PIECE : PIECE.byteslice(0, left)
    io.write(piece)
    left -= piece.bytesize
  end
  io.write(digest.hexdigest)
rescue EOFError, IOError, SystemCallError
  nil
ensure
  io.close
end

def flood(io, size)
  written = 0
  held = false
  while written < size
    piece = PIECE.byteslice(written % PIECE.bytesize, [PIECE.bytesize - (written % PIECE.bytesize), size - written].min)
    n = io.write_nonblock(piece, exception: false)
    if n == :wait_writable
      next if io.wait_writable(2) || held

      HELD << written
      held = true
      io.wait_writable(60)
    else
      written += n
    end
  end
  HELD << "never held up: #{written}" unless held
rescue IOError, SystemCallError
  nil
ensure
  io.close
end

run lambda { |env|
  case env["PATH_INFO"]
  when "/echo"
    io = env["rack.hijack"].call
    Thread.new { echo(io) }
    [200, {}, []]
  when "/until-end"
    io = env["rack.hijack"].call
    Thread.new { until_end(io) }
    [200, {}, []]
  when "/bulk"
    io = env["rack.hijack"].call
    size = Integer(env["QUERY_STRING"])
    Thread.new { bulk(io, size) }
    [200, {}, []]
  when "/flood"
    io = env["rack.hijack"].call
    size = Integer(env["QUERY_STRING"])
    Thread.new { flood(io, size) }
    [200, {}, []]
  when "/held"
    [200, { "content-type" => "text/plain" }, [Timeout.timeout(60) { HELD.pop }.to_s]]
  when "/stats"
    [200, { "content-type" => "application/json" }, [JSON.generate(Catamount.stats)]]
  when "/release"
    RELEASE << true
    [200, { "content-type" => "text/plain" }, ["released"]]
  when "/ended"
    [200, { "content-type" => "text/plain" }, [Timeout.timeout(10) { ENDED.pop }]]
  else
    [200, { "content-type" => "text/plain" }, ["plain"]]
  end
}
