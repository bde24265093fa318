# frozen_string_literal: true

# The partial-hijack tests' app (test/test_partial_hijack.rb): the Rack 2 `rack.hijack`
# response header, Rack 3 callable bodies (framed, kept alive), and a 101 upgrade chosen from
# `env["rack.protocol"]` that echoes on the raw stream.

# Echoes what it reads until the client sends "quit" (or leaves), then closes.
# Queue#pop(timeout:) is Ruby 3.2+: on 3.1 it does not wait at all.
require "timeout"
def echo(io)
  while (data = io.readpartial(4096))
    io.write(data)
    break if data.end_with?("quit")
  end
rescue EOFError, IOError, SystemCallError
  nil
ensure
  io.close
end

# Streams whose callables returned, for a later request to write to.
LEFT = Queue.new

# What stopped the endless callable (its client left).
ENDED = Queue.new

run lambda { |env|
  case env["PATH_INFO"]
  when "/rack2"
    [200, { "content-type" => "text/plain", "rack.hijack" => lambda { |io|
      io.write("rack2 ")
      io.write("partial")
      io.close
    } }, []]
  when "/callable"
    [200, { "content-type" => "text/plain" }, lambda { |stream|
      stream.write("one ")
      stream << "two"
      stream.flush
      stream.close
    }]
  when "/callable-length"
    [200, { "content-length" => "11" }, lambda { |stream|
      stream.write("hello", " ")
      stream.write("world")
      stream.close
    }]
  when "/raise"
    [200, {}, lambda { |stream|
      stream.write("partial")
      raise "the callable fails"
    }]
  when "/leave"
    [200, {}, lambda { |stream|
      stream.write("left")
      LEFT << stream
    }]
  when "/late"
    stream = Timeout.timeout(10) { LEFT.pop }
    begin
      stream.write("too late")
      [200, {}, ["written"]]
    rescue IOError => e
      [200, {}, [e.class.name]]
    end
  when "/endless"
    [200, {}, lambda { |stream|
      begin
        loop { stream.write("x" * 4096) }
      rescue SystemCallError, IOError => e
        ENDED << e.is_a?(SystemCallError).to_s
        raise
      end
    }]
  when "/ended"
    [200, {}, [Timeout.timeout(10) { ENDED.pop }.inspect]]
  when "/protocols"
    [200, {}, [env.fetch("rack.protocol", "none").inspect]]
  when "/upgrade"
    return [426, { "upgrade" => "echo" }, ["echo only"]] unless env["rack.protocol"]&.include?("echo")

    # The echo runs on a thread of its own: the pool thread is free once the call returns.
    env["rack.response_finished"] << ->(_env, status, headers, error) { ENDED << [status, headers, error] }
    [101, { "rack.protocol" => "echo", "x-up" => "1" }, ->(io) { Thread.new { echo(io) } }]
  when "/plain-101"
    # A 101 with an ordinary body, whatever the request asked.
    [101, {}, []]
  when "/upgrade-anyway"
    # A broken app: switches to its own choice whatever the client offered.
    [101, { "rack.protocol" => "h2c" }, ->(io) { io.close }]
  when "/upgrade-rack2"
    # Rack 2 style: the app names the protocol itself, the header's callable gets the socket.
    [101, { "upgrade" => "echo", "rack.hijack" => ->(io) { Thread.new { echo(io) } } }, []]
  else
    [200, {}, ["plain"]]
  end
}
