# frozen_string_literal: true

require "tmpdir"

# A 10 MiB file sent through a `to_path` body: servers may send it straight from the file.
PATH = File.join(Dir.tmpdir, "catamount-bench-10mib-#{Process.pid}.bin")
File.binwrite(PATH, "f" * (10 << 20))
OWNER = Process.pid # forked workers must not delete it
at_exit { File.delete(PATH) if Process.pid == OWNER && File.exist?(PATH) }

# The body Rack::Files would give, without its range and header logic.
class FileBody
  def initialize(path)
    @path = path
  end

  def to_path
    @path
  end

  def each
    File.open(@path, "rb") do |f|
      while (chunk = f.read(65_536))
        yield chunk
      end
    end
  end
end

run(lambda do |_env|
  [200, { "content-type" => "application/octet-stream", "content-length" => (10 << 20).to_s }, FileBody.new(PATH)]
end)
