# frozen_string_literal: true

module Catamount
  # What a process that serves (Single, a cluster Worker) answers as the launcher's role: its
  # own pool's stats and status line, plugin timers each on a thread, and starting to serve. The including class
  # sets `@server` and `@started_at` (when it starts serving) and `@context`.
  module Serving
    # `started_at`, the server's own stats (Native::Server#stats: docs/stats.md), `versions`.
    # `reset_max`: the `_max` highs restart from the current values once read.
    def stats(reset_max: false)
      return {} unless @server && @started_at

      { started_at: Context.iso8601(@started_at), **@server.stats(reset_max: reset_max), versions: Context.versions }
    end

    def status_line
      "worker: #{Context.pool_summary(stats)}"
    end

    def every(interval, block)
      Timers.thread(interval, @context.error_log, block)
    end

    # Starts the reactor and the pool; `:finished` arrives on `events` once the server ended
    # (from an `ensure`: the waiting thread wakes it even when the wait raises).
    def start_serving(app, events)
      server = @server
      server.start
      pool = Pool.start(@context, server, app)
      @serving_events = events
      watch_request_timeouts(server) if @context.options[:request_timeout]
      Thread.new do
        server.wait
      ensure
        events << :finished
      end
      pool
    end

    # `request_timeout`: one thread waits for the deadlines (the native watch answers, logs and
    # raises: crates/catamount-ext/src/timeout.rs) until the server ends.
    def watch_request_timeouts(server)
      Thread.new do
        while (lost = server.watch_request_timeouts)
          threads_lost(lost)
        end
      end
    end

    # Threads stuck past `request_timeout_grace` (already logged). A single process runs on with
    # fewer threads; a cluster worker has itself replaced (Cluster::Worker).
    def threads_lost(_count); end
  end
end
