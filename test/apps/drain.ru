# frozen_string_literal: true

# The drain tests' app (test/test_drain.rb): connections that outlive their request, each
# greeting with this process's pid so a test knows which worker holds it.
#
#   /hijack    full hijack; a thread of the app's own echoes lines until "quit" or the end
#   /upgrade   a 101 with a callable body (Rack 3): the callable echoes on the pool thread
#   /events    an endless SSE stream, an event every 0.1 s
#   /wait      answers only once the file named by the query string exists (a request whose
#              app is still making its response when the drain time ends)
#   /big       the same, then a 20 MB body of known length
#   /flood     an endless stream of 64 KiB chunks, as fast as the client takes them
#   /gc        runs a full GC (the drain must still know every taken connection after one)
#   /          a plain response

# Echoes each line read until "quit" or the end of the stream, then closes.
def echo(io)
  io.write("hello #{Process.pid}\n")
  while (line = io.gets)
    io.write(line)
    break if line.start_with?("quit")
  end
rescue IOError, SystemCallError
  nil
ensure
  io.close unless io.closed?
end

# Waits (bounded) until the file named by the query string exists.
def await_file(env)
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 60
  sleep 0.02 until File.exist?(env["QUERY_STRING"]) || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
end

# Endless 64 KiB chunks.
class Flood
  CHUNK = ("x" * 65_536).freeze

  def each
    loop { yield CHUNK }
  end
end

# Endless server-sent events.
class Events
  def each
    n = 0
    loop do
      yield "data: #{Process.pid} #{n += 1}\n\n"
      sleep 0.1
    end
  end
end

run lambda { |env|
  case env["PATH_INFO"]
  when "/hijack"
    io = env["rack.hijack"].call
    Thread.new { echo(io) }
    [200, {}, []]
  when "/upgrade"
    [101, { "rack.protocol" => "echo" }, ->(io) { echo(io) }]
  when "/events"
    [200, { "content-type" => "text/event-stream" }, Events.new]
  when "/wait"
    await_file(env)
    [200, { "content-type" => "text/plain" }, ["waited"]]
  when "/big"
    await_file(env)
    [200, { "content-type" => "application/octet-stream" }, ["y" * 20_000_000]]
  when "/flood"
    [200, { "content-type" => "application/octet-stream" }, Flood.new]
  when "/gc"
    GC.start
    [200, { "content-type" => "text/plain" }, ["gc"]]
  else
    [200, { "content-type" => "text/plain" }, ["plain #{Process.pid}"]]
  end
}
