# frozen_string_literal: true

# One app with a route per behaviour the tests need. Routes take their parameters from the
# query string.
require "json"

ENV_KEYS = %w[
  REQUEST_METHOD SCRIPT_NAME PATH_INFO REQUEST_PATH REQUEST_URI QUERY_STRING FRAGMENT SERVER_NAME
  SERVER_PORT SERVER_PROTOCOL HTTP_VERSION GATEWAY_INTERFACE REMOTE_ADDR CONTENT_LENGTH CONTENT_TYPE
  SERVER_SOFTWARE GATEWAY_INTERFACE rack.url_scheme rack.multithread rack.multiprocess rack.run_once
  rack.hijack?
].freeze

# A body that streams its parts with `each` and records that `close` was called.
class StreamBody
  def initialize(parts, fail_after: nil, marker: nil)
    @parts = parts
    @fail_after = fail_after
    @marker = marker
  end

  def each
    @parts.each_with_index do |part, i|
      raise "stream failed" if @fail_after && i == @fail_after

      yield part
    end
  end

  def close
    File.write(@marker, "closed") if @marker
  end
end

# A body served from a file with `to_path` (sent with sendfile, never read into Ruby).
class PathBody
  def initialize(path)
    @path = path
  end

  attr_reader :path
  alias to_path path

  def each
    raise "each must not be called on a to_path body"
  end
end

# Requests to /barrier wait until `n` of them have arrived (or `t` seconds pass): with fewer
# threads than `n` serving at once, the first ones answer "timeout" instead of "met". The count
# only grows, so a test uses one round per server.
BARRIER = { lock: Mutex.new, cond: ConditionVariable.new, count: 0 }

def barrier(n, seconds)
  BARRIER[:lock].synchronize do
    BARRIER[:count] += 1
    BARRIER[:cond].broadcast
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
    while BARRIER[:count] < n
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      return "timeout" if left <= 0

      BARRIER[:cond].wait(BARRIER[:lock], left)
    end
    "met"
  end
end

# `mb` Strings of 1 MiB holding the counters 0, 1, 2, ... as 4-byte big-endian integers: a byte
# lost, repeated or out of place anywhere in the body shows.
def counted_parts(mb)
  Array.new(mb) { |k| ((k << 18)...((k + 1) << 18)).to_a.pack("N*") }
end

# The last String of the latest /mutating body, for /mutate to change while it is being sent.
MUTABLE = []

def params(env)
  env["QUERY_STRING"].split("&").to_h { |pair| pair.split("=", 2) }
end

ROUTES = {
  "/" => ->(_env) { [200, { "content-type" => "text/plain" }, ["hello"]] },
  "/env" => lambda do |env|
    info = ENV_KEYS.to_h { |k| [k, env[k]] }
    env.each_key { |k| info[k] = env[k] if k.start_with?("HTTP_") }
    info["body"] = env["rack.input"].read
    info["input_class"] = env["rack.input"].class.name
    info["body_wait"] = env["puma.request_body_wait"].class.name
    info["catamount_body_wait"] = env.key?("catamount.request_body_wait")
    info["errors_is_stderr"] = env["rack.errors"].equal?($stderr)
    info["env_frozen"] = env.frozen?
    env["app.note"] = "an app may add to its env"
    [200, { "content-type" => "application/json" }, [JSON.generate(info)]]
  end,
  # How rack.input answers each call of the Rack input protocol, read from the start.
  "/input" => lambda do |env|
    input = env["rack.input"]
    buffer = +"stale"
    info = {
      "read_4" => input.read(4), "read_0" => input.read(0), "read_all" => input.read,
      "read_into" => input.read(nil, buffer), "buffer" => buffer, "gets" => input.gets,
      "each" => input.each.to_a, "rewind" => input.rewind, "eof" => input.eof?,
      "env_size" => env.size
    }
    [200, { "content-type" => "application/json" }, [JSON.generate(info)]]
  end,
  "/echo" => ->(env) { [200, { "content-type" => "application/octet-stream" }, [env["rack.input"].read]] },
  "/boom" => ->(_env) { raise ArgumentError, "kaboom" },
  "/bad_status" => ->(_env) { ["abc", {}, ["x"]] },
  "/bad_header_value" => ->(_env) { [200, { "x-bad" => "a\r\nset-cookie: evil=1" }, ["x"]] },
  "/bad_header_name" => ->(_env) { [200, { "bad name" => "v" }, ["x"]] },
  "/two_elements" => ->(_env) { [200, {}] },
  "/not_array" => ->(_env) { "nope" },
  "/wrong_length" => ->(_env) { [200, { "content-length" => "10" }, ["short"]] },
  # A non-ASCII space (U+00A0) before the digits: not a number a client could read.
  "/length_after_nbsp" => ->(_env) { [200, { "content-length" => "\u00a01" }, ["x"]] },
  "/multi" => ->(_env) { [200, { "set-cookie" => "a=1\nb=2", "x-list" => %w[one two] }, ["m"]] },
  "/status" => ->(env) { [params(env).fetch("code").to_i, {}, ["body"]] },
  "/stream" => lambda do |env|
    n = params(env).fetch("n", "3").to_i
    size = params(env).fetch("size", "5").to_i
    [200, { "content-type" => "text/plain" }, StreamBody.new(Array.new(n) { |i| (i.to_s * size)[0, size] }, marker: params(env)["marker"])]
  end,
  "/stream_boom" => lambda do |env|
    p = params(env)
    [200, {}, StreamBody.new(Array.new(p.fetch("n", "3").to_i) { "x" * p.fetch("size", "10").to_i },
                             fail_after: p.fetch("at", "1").to_i, marker: p["marker"])]
  end,
  "/file" => ->(env) { [200, { "content-type" => "application/octet-stream" }, PathBody.new(params(env).fetch("path"))] },
  "/sleep" => lambda do |env|
    File.write(params(env)["marker"], "in app") if params(env)["marker"]
    sleep params(env).fetch("s", "1").to_f
    [200, {}, ["slept"]]
  end,
  "/hold" => lambda do |env|
    File.write(params(env).fetch("marker"), "in app")
    release = params(env).fetch("release")
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + params(env).fetch("t", "20").to_f
    sleep 0.01 until File.exist?(release) || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    [200, {}, ["held"]]
  end,
  "/big" => ->(env) { [200, { "content-type" => "application/octet-stream" }, ["x" * (params(env).fetch("mb", "1").to_i << 20)]] },
  "/counted" => ->(env) { [200, { "content-type" => "application/octet-stream" }, counted_parts(params(env).fetch("mb", "1").to_i)] },
  "/mutating" => lambda do |env|
    parts = counted_parts(params(env).fetch("mb", "1").to_i)
    MUTABLE.replace([parts.last])
    [200, { "content-type" => "application/octet-stream" }, parts]
  end,
  "/mutate" => lambda do |_env|
    MUTABLE.first << ("y" * (1 << 20))
    [200, {}, ["mutated"]]
  end,
  "/after_reply" => lambda do |env|
    marker = params(env).fetch("marker")
    env["rack.after_reply"] << -> { File.write(marker, "after") }
    [200, {}, ["ok"]]
  end,
  # after_reply registered, then the app raises (or returns a malformed response).
  "/after_reply_then" => lambda do |env|
    marker = params(env).fetch("marker")
    env["rack.after_reply"] << -> { File.write(marker, "after") }
    raise ArgumentError, "after registering" if params(env)["how"] == "raise"

    "not a triple"
  end,
  "/barrier" => ->(env) { [200, {}, [barrier(params(env).fetch("n").to_i, params(env).fetch("t", "10").to_f)]] },
  "/thread" => ->(_env) { [200, {}, [Thread.current.object_id.to_s]] },
  "/close_header" => ->(_env) { [200, { "connection" => "close" }, ["bye"]] }
}.freeze

run(lambda do |env|
  route = ROUTES[env["PATH_INFO"]]
  route ? route.call(env) : [404, { "content-type" => "text/plain" }, ["not found"]]
end)
