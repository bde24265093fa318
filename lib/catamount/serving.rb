# frozen_string_literal: true

module Catamount
  # What a process that serves (Single, a cluster Worker) answers as the launcher's role: its
  # own pool's stats and status line, and plugin timers each on a thread. The including class
  # sets `@server` and `@started_at` (when it starts serving) and `@context`.
  module Serving
    def stats
      return {} unless @server && @started_at

      @server.stats.merge(started_at: Context.iso8601(@started_at))
    end

    def status_line
      "worker: #{Context.pool_summary(stats)}"
    end

    def every(interval, block)
      Timers.thread(interval, @context.error_log, block)
    end
  end
end
