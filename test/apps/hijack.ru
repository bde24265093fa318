# frozen_string_literal: true

# The full-hijack tests' app (test/test_hijack.rb): routes that take the connection with
# `env["rack.hijack"]` and talk on it from a thread of their own (so the pool thread is free),
# and plain routes to show the server still answers meanwhile.
# Queue#pop(timeout:) is Ruby 3.2+: on 3.1 it does not wait at all.
require "timeout"
require "json"

# Bodies of hijacked requests whose close ran (the server must still call it).
CLOSED = Queue.new
# What rack.response_finished callbacks of hijacked requests were given.
FINISHED = Queue.new

# A body the server must close and never send.
class RecordingBody
  def initialize(name)
    @name = name
  end

  def each
    yield "the server must not send this"
  end

  def close
    CLOSED << @name
  end
end

# Greets, then echoes what it reads until the client sends "quit" (or leaves), then closes.
def echo(io)
  io.write("hello from #{io.class} (#{io.is_a?(BasicSocket)})\n")
  while (data = io.readpartial(4096))
    io.write(data)
    break if data.include?("quit")
  end
rescue EOFError, IOError, SystemCallError
  nil
ensure
  io.close unless io.closed?
end

run lambda { |env|
  case env["PATH_INFO"]
  when "/echo"
    # The IO must answer the calls Rack names; the early bytes come first on each of them.
    io = env["rack.hijack"].call
    same = env["rack.hijack_io"].equal?(io) && env["rack.hijack"].call.equal?(io)
    Thread.new { echo(io) }
    io.write("") unless same
    [200, { "x-ignored" => "1" }, RecordingBody.new("echo")]
  when "/nonblock"
    # Echo with the non-blocking calls, from the thread that hijacked, inside app.call.
    io = env["rack.hijack"].call
    io.write_nonblock("ready\n")
    io.wait_readable(10)
    data = io.read_nonblock(4096)
    io.write_nonblock("got #{data}")
    io.to_io.close
    [200, {}, RecordingBody.new("nonblock")]
  when "/hints"
    # 103s sent before the hijack reach the client first (`--early-hints`).
    env["rack.early_hints"]&.call("link" => "</a.css>; rel=preload")
    io = env["rack.hijack"].call
    io.write("after hints\n")
    io.close
    [200, {}, []]
  when "/raise"
    io = env["rack.hijack"].call
    io.write("partial\n")
    raise "the app fails after hijacking"
  when "/finished-hijack"
    env["rack.response_finished"] << ->(*args) { FINISHED << args.drop(1).inspect }
    io = env["rack.hijack"].call
    io.write("bye")
    io.close
    [-1, { "x-told" => "1" }, []]
  when "/finished"
    [200, {}, [Timeout.timeout(10) { FINISHED.pop }.to_s]]
  when "/closed"
    names = []
    names << CLOSED.pop(true) until CLOSED.empty?
    [200, { "content-type" => "text/plain" }, [names.join(",")]]
  when "/stats"
    [200, { "content-type" => "application/json" }, [JSON.generate(Catamount.stats)]]
  when "/hijack_outside"
    hijack = env["rack.hijack"]
    message = Thread.new do
      hijack.call
      "no error"
    rescue IOError => e
      e.message
    end.value
    [200, { "content-type" => "text/plain" }, [message]]
  else
    [200, { "content-type" => "text/plain" }, ["plain"]]
  end
}
