# frozen_string_literal: true

# test/test_tls_writes.rb's app: responses larger than any socket buffer, so that the pool
# thread's direct writes through TLS meet a full socket and the reactor takes over.
# `/big?n=N`: N bytes in one String (a known length); `/parts?n=N`: N bytes yielded in 64 KiB
# parts with no length (chunked); anything else: "small".
PART = 64 * 1024

# N bytes of a pattern, yielded a part at a time.
class Parts
  def initialize(size) = @size = size

  def each
    sent = 0
    while sent < @size
      n = [PART, @size - sent].min
      yield Pattern.bytes(sent, n)
      sent += n
    end
  end
end

# A byte pattern a client can check at any offset: byte i is (i * 7) % 251.
module Pattern
  TABLE = Array.new(251) { |i| ((i * 7) % 251).chr }.join.b.freeze

  def self.bytes(from, count)
    out = +"".b
    out << TABLE.byteslice((from + out.bytesize) % 251, 251) while out.bytesize < count + 251
    out.byteslice(0, count)
  end
end

run lambda { |env|
  size = env["QUERY_STRING"][/n=(\d+)/, 1].to_i
  case env["PATH_INFO"]
  when "/big" then [200, { "content-type" => "application/octet-stream" }, [Pattern.bytes(0, size)]]
  when "/parts" then [200, { "content-type" => "application/octet-stream" }, Parts.new(size)]
  else [200, { "content-type" => "text/plain" }, ["small"]]
  end
}
