# frozen_string_literal: true

# The soak's app (test/test_soak.rb, `make soak`) and the slow-client test's
# (test/test_slow_clients.rb). Every answer can be checked by the client from what it sent:
#   /hello?ID      "hello ID"
#   /upload        "BYTES SHA256-HEX" of the request body (fixed-length or chunked)
#   /stream?N      N parts "part I\n" yielded one by one (chunked on the wire)
#   /file          a file sent through `to_path` (FILE_BYTES of a known pattern)
#   /ws            full hijack: "101", then each line read is echoed until "bye\n", then close
#   /big?N         N bytes of "b" (for slow readers)
#   /pattern?N     N bytes, byte I being I % 251 (a piece out of place shows)
#   /stats         Catamount.stats as JSON
require "digest"
# Loaded now: Digest autoloads SHA256 on first use, and two request threads doing that at once
# can fail ("Digest::Base cannot be directly inherited in Ruby").
require "digest/sha2"
require "json"

FILE_BYTES = 300 * 1024
# In the server's directory (the test's temporary one), written once per boot.
SOAK_FILE = File.expand_path("soak-file.bin")
File.binwrite(SOAK_FILE, (0...FILE_BYTES).map { |i| (i % 251).chr }.join) unless File.size?(SOAK_FILE) == FILE_BYTES

CYCLE = (0...251).map(&:chr).join.b.freeze

def pattern(bytes)
  (CYCLE * ((bytes / CYCLE.bytesize) + 1)).byteslice(0, bytes)
end

# A body answered with sendfile.
class FileBody
  def initialize(path)
    @path = path
  end

  def to_path
    @path
  end

  def each
    yield File.binread(@path)
  end
end

# Parts yielded one at a time, so each goes out as its own chunk.
class Parts
  def initialize(count)
    @count = count
  end

  def each
    @count.times { |i| yield "part #{i}\n" }
  end
end

# Echoes lines on a taken connection from a thread of its own (the pool thread is free).
def echo_lines(io)
  io.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: soak-echo\r\nConnection: Upgrade\r\n\r\n")
  while (line = io.gets)
    io.write(line)
    break if line == "bye\n"
  end
rescue IOError, SystemCallError
  nil
ensure
  io.close unless io.closed?
end

run lambda { |env|
  query = env["QUERY_STRING"]
  case env["PATH_INFO"]
  when "/hello"
    [200, { "content-type" => "text/plain" }, ["hello #{query}"]]
  when "/upload"
    digest = Digest::SHA256.new
    bytes = 0
    while (piece = env["rack.input"].read(65_536))
      bytes += piece.bytesize
      digest << piece
    end
    [200, { "content-type" => "text/plain" }, ["#{bytes} #{digest.hexdigest}"]]
  when "/stream"
    [200, { "content-type" => "text/plain" }, Parts.new(Integer(query))]
  when "/file"
    [200, { "content-type" => "application/octet-stream", "content-length" => FILE_BYTES.to_s }, FileBody.new(SOAK_FILE)]
  when "/ws"
    io = env["rack.hijack"].call
    Thread.new { echo_lines(io) }
    [200, {}, []]
  when "/big"
    [200, { "content-type" => "application/octet-stream" }, ["b" * Integer(query)]]
  when "/pattern"
    [200, { "content-type" => "application/octet-stream" }, [pattern(Integer(query))]]
  when "/stats"
    [200, { "content-type" => "application/json" }, [JSON.generate(Catamount.stats)]]
  else
    [404, { "content-type" => "text/plain" }, ["not found\n"]]
  end
}
