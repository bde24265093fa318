# frozen_string_literal: true

# The app's own ceiling: its rackup called in a loop in this Ruby, with no server, no socket and
# no load generator, in N forked processes (the app loaded once before the fork, as a preloaded
# cluster does), each running THREADS loops at once (default 1; an app that waits on its
# database needs several to keep the CPUs busy, as a server's pool threads do). What a server
# adds can only lower this rate, so a Catamount/Puma ratio of T needs Puma at or under 1/T of
# it. The runner starts this script in the app's directory with RACK_ENV=production:
#
#   ruby bench/lib/app_alone.rb RACKUP PATH PROCESSES SECONDS WARMUP_SECONDS [THREADS]
#
# Prints one JSON object: {"rps": requests per second summed over the processes, "requests": n}.
# Exits 1 (with the reason on stderr) if the app answers anything but 2xx.
require "json"
require "rack"
require "stringio"

module AppAlone
  module_function

  # The keys a server puts in every env; each call gets a copy and a fresh rack.input.
  def base_env(path)
    path_info, query = path.split("?", 2)
    {
      "REQUEST_METHOD" => "GET", "SCRIPT_NAME" => "", "PATH_INFO" => path_info, "QUERY_STRING" => query.to_s,
      "SERVER_NAME" => "127.0.0.1", "SERVER_PORT" => "9292", "SERVER_PROTOCOL" => "HTTP/1.1",
      "HTTP_VERSION" => "HTTP/1.1", "HTTP_HOST" => "127.0.0.1:9292", "REMOTE_ADDR" => "127.0.0.1",
      "rack.version" => [1, 6], "rack.url_scheme" => "http", "rack.errors" => $stderr,
      "rack.multithread" => true, "rack.multiprocess" => false, "rack.run_once" => false,
      "rack.hijack?" => false
    }.freeze
  end

  # Calls the app until `deadline`; returns how many calls finished. Raises on a non-2xx answer.
  def call_until(app, env, deadline)
    count = 0
    while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      request = env.dup
      request["rack.input"] = StringIO.new(+"".b)
      status, _headers, body = app.call(request)
      body.each(&:bytesize)
      body.close if body.respond_to?(:close)
      raise "the app answered #{status} to #{env['PATH_INFO']}" unless (200..299).cover?(status.to_i)

      count += 1
    end
    count
  end

  # `threads` loops in this process at once, each warmed up until the same moment and then
  # counted over the same `seconds`; the sum of their calls. One loop runs in the process's own
  # thread, as it always did (the CPU-bound apps' ceilings stay comparable with earlier runs).
  def loops(app, env, threads, seconds, warmup)
    start = Process.clock_gettime(Process::CLOCK_MONOTONIC) + warmup
    return counted(app, env, start, seconds) if threads == 1

    Array.new(threads) { Thread.new { counted(app, env, start, seconds) } }.sum(&:value)
  end

  # Calls until `start` (the warm-up), then counts the calls over the next `seconds`.
  def counted(app, env, start, seconds)
    call_until(app, env, start)
    call_until(app, env, start + seconds)
  end

  def run(rackup, path, processes, seconds, warmup, threads = 1)
    app = Rack::Builder.parse_file(rackup)
    app = app.first if app.is_a?(Array) # rack 2 returns [app, options]
    env = base_env(path)
    reader, writer = IO.pipe
    pids = Array.new(processes) do
      fork do
        reader.close
        writer.puts loops(app, env, threads, seconds, warmup)
      rescue StandardError => e
        warn "app_alone: #{e.message}"
        exit!(1)
      end
    end
    writer.close
    counts = reader.read.split.map(&:to_i)
    statuses = pids.map { |pid| Process.wait2(pid).last }
    raise "a process failed" unless statuses.all?(&:success?) && counts.size == processes

    { rps: counts.sum / seconds, requests: counts.sum }
  end
end

if $PROGRAM_NAME == __FILE__
  rackup, path, processes, seconds, warmup, threads = ARGV
  begin
    puts JSON.generate(AppAlone.run(rackup, path, Integer(processes), Float(seconds), Float(warmup), Integer(threads || 1)))
  rescue StandardError => e
    warn "app_alone: #{e.message}"
    exit 1
  end
end
