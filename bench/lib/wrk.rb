# frozen_string_literal: true

require "open3"
require_relative "placement"

module Bench
  # One wrk run and what it measured.
  WrkResult = Struct.new(:requests, :rps, :p50_ms, :p99_ms, :errors, :non_2xx, keyword_init: true)

  # Drives load with wrk (Debian's 4.1) and reads its report.
  module Wrk
    LUA_DIR = File.expand_path("../wrk", __dir__)

    module_function

    # `connections` 50 means `-t2 -c50` (200: `-t2 -c200`); 1 means `-t1 -c1` (single-connection latency).
    # `headers` ("Name: value") go with every request (`Connection: close`: wrk connects again
    # after each response).
    def run(url, connections:, seconds:, script: nil, headers: nil)
      threads = [connections, 2].min
      args = ["wrk", "-t#{threads}", "-c#{connections}", "-d#{seconds}s", "--latency", "--timeout", "10s"]
      args += ["-s", File.join(LUA_DIR, script)] if script
      (headers || []).each { |h| args += ["-H", h] }
      out, err, status = Open3.capture3(*Placement.client(args), url)
      raise "wrk failed (#{status}): #{err.strip} #{out.strip}" unless status.success?

      parse(out)
    end

    def parse(out)
      requests = out[/(\d+) requests in/, 1].to_i
      errors = out[/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/] ? ::Regexp.last_match.captures.map(&:to_i).sum : 0
      WrkResult.new(
        requests: requests,
        rps: out[/Requests\/sec:\s+([\d.]+)/, 1].to_f,
        # With no request completed, wrk prints zero latencies: there are none.
        p50_ms: requests.zero? ? nil : latency(out, "50"),
        p99_ms: requests.zero? ? nil : latency(out, "99"),
        errors: errors,
        non_2xx: out[/Non-2xx or 3xx responses: (\d+)/, 1].to_i
      )
    end

    def latency(out, percentile)
      value, unit = out.match(/^\s+#{percentile}%\s+([\d.]+)(us|ms|s)\b/)&.captures
      return nil unless value

      value.to_f * { "us" => 0.001, "ms" => 1.0, "s" => 1000.0 }.fetch(unit)
    end
  end
end
