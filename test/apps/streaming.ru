# frozen_string_literal: true

# Streaming bodies for test_streaming.rb: bodies whose `each` yields slowly or without end, and
# what they report back (files under the `dir` the test names, and counters read over HTTP).

require "fileutils"

# Waits (bounded) for the test's go-ahead file before going on.
module GoAhead
  def self.await(path)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
    until File.exist?(path)
      raise "no go-ahead #{path}" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.01
    end
  end
end

# SSE events, the next one yielded only once the test has read this one and says go.
class Events
  def initialize(dir, count)
    @dir = dir
    @count = count
  end

  def each
    1.upto(@count) do |i|
      yield "id: #{i}\ndata: event #{i}\n\n"
      GoAhead.await(File.join(@dir, "go#{i}")) if i < @count
    end
  end

  def close
    File.write(File.join(@dir, "closed"), "closed")
  end
end

# Yields the same part forever, counting the bytes; `close` reports what stopped `each`.
class Endless
  PART = ("x" * 16_384).freeze
  @yielded = 0
  class << self
    attr_accessor :yielded
  end

  def initialize(dir)
    @dir = dir
  end

  def each
    loop do
      yield PART
      Endless.yielded += PART.bytesize
    end
  rescue Exception => e # rubocop:disable Lint/RescueException -- reported, then raised again
    File.write(File.join(@dir, "stopped"), e.class.name)
    raise
  end

  def close
    File.write(File.join(@dir, "closed"), "closed")
  end
end

# Registers `rack.after_reply` and three `rack.response_finished` callables (the middle one
# raises); each appends a line with what it was given to `dir`/finished.
module Finished
  def self.register(env, dir)
    log = File.join(dir, "finished")
    note = ->(line) { File.open(log, "a") { |f| f.puts(line) } }
    env["rack.after_reply"] << -> { note.call("after_reply") }
    %w[first second third].each do |name|
      env["rack.response_finished"] << lambda { |e, status, headers, error|
        note.call([name, e.equal?(env), status, headers.to_a.inspect, error.class].join(" "))
        raise "second callback fails" if name == "second"
      }
    end
  end

  # Yields one part, then raises (after the head went out).
  class FailingBody
    def each
      yield "one part"
      raise ArgumentError, "failed mid-stream"
    end
  end
end

run lambda { |env|
  params = env["QUERY_STRING"].split("&").to_h { |pair| pair.split("=", 2) }
  Finished.register(env, params["dir"]) if params["finished"]
  case env["PATH_INFO"]
  when "/raise"
    raise "boom"
  when "/fail_mid_stream"
    [200, { "x-kind" => "failing" }, Finished::FailingBody.new]
  when "/sse"
    [200, { "content-type" => "text/event-stream", "cache-control" => "no-cache" },
     Events.new(params.fetch("dir"), Integer(params.fetch("n")))]
  when "/endless"
    [200, { "content-type" => "application/octet-stream" }, Endless.new(params.fetch("dir"))]
  when "/yielded"
    [200, { "content-type" => "text/plain" }, [Endless.yielded.to_s]]
  else
    [200, { "content-type" => "text/plain" }, ["hello"]]
  end
}
