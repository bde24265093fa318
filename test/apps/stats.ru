# frozen_string_literal: true

# The stats tests' app (test/test_stats.rb): routes that answer the in-process stats, hold a
# thread until the test releases them, and answer with a chosen status or an exception.
require "json"

# How long a held request waits for its release at most (a test that failed must not leave
# threads held for ever).
HOLD_LIMIT = 15

def wait_for(limit = HOLD_LIMIT)
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + limit
  sleep 0.01 until yield || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
end

def json(value, status = 200)
  [status, { "content-type" => "application/json" }, [JSON.generate(value)]]
end

run lambda { |env|
  query = Rack::Utils.parse_query(env["QUERY_STRING"])
  case env["PATH_INFO"]
  when "/stats"
    # The three in-process sources, read back to back.
    reset = query["reset"] == "1"
    json(catamount: Catamount.stats(reset_max: reset), puma: JSON.parse(Puma.stats), puma_hash: Puma.stats_hash)
  when "/hold"
    # Marks that it runs, waits for the test's release file, then (with `backlog=n`) for n
    # requests to be queued behind it, and answers the stats seen then.
    dir = query.fetch("dir")
    id = query.fetch("id")
    File.write(File.join(dir, "started-#{id}"), "")
    wait_for { File.exist?(File.join(dir, "release-#{id}")) }
    wanted = query["backlog"].to_i
    wait_for { Catamount.stats[:backlog] >= wanted } if wanted.positive?
    json(Catamount.stats)
  when "/status"
    [Integer(query.fetch("code")), { "content-type" => "text/plain" }, ["status\n"]]
  when "/raise"
    raise "raised on purpose"
  when "/big", "/file"
    # Larger than the sockets hold while the client waits for `marker` (written once the pool
    # thread is done with the response): the rest is written by the reactor. `/file` is sent
    # with sendfile (a body with `to_path`).
    marker = query.fetch("marker")
    env["rack.after_reply"] << -> { File.write(marker, "done") }
    next [200, {}, ["b" * Integer(query.fetch("size"))]] if env["PATH_INFO"] == "/big"

    path = query.fetch("path")
    body = Object.new
    body.define_singleton_method(:to_path) { path }
    body.define_singleton_method(:each) { |&b| b.call(File.binread(path)) }
    [200, { "content-length" => File.size(path).to_s }, body]
  when "/env"
    keys = %w[catamount.queue_time puma.request_body_wait]
    json(keys.to_h { |k| [k, { present: env.key?(k), class: env[k].class.name, value: env[k] }] })
  else
    [200, { "content-type" => "text/plain" }, ["ok\n"]]
  end
}
