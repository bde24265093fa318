# frozen_string_literal: true

module Catamount
  # The last part of a graceful stop, for connections that outlive their request: the ones the
  # app took (full hijack, 101 upgrades such as WebSockets) and open-ended streams (bodies
  # without a length: SSE, streaming bodies). Both get `drain_timeout` seconds from the start of
  # the stop to end by themselves; what is left then is closed and logged, one line each.
  #
  # Streams are the reactor's: it cuts them at the same deadline (reactor/conn.rs).
  # Taken connections are the app's: Native.taken_connections holds the app's IOs weakly
  # (rack/taken.rs), and this waits for them to close, then shuts down the sockets of those still
  # open. Shut down, not closed: the app's descriptor stays valid (no number reused under a
  # thread still using it), its reads see the end of the stream, its writes fail, and the client
  # sees the close even though the app never closes its IO. A thread serving the connection
  # (an upgraded callable on a pool thread, a WebSocket library's loop) thus ends on its own.
  #
  # Puma closes these connections at once when a worker stops (puma#3323), so a phased restart
  # drops every WebSocket client of the worker being replaced; here they stay until the drain
  # time is over, and only those still open then reconnect. A hot restart does not drain: it
  # replaces every process and nothing accepts meanwhile, so waiting would only hold up every
  # new client (the connections could not outlive the restart anyway).
  #
  # Responses of known length are not drained: they end by themselves (or by `write_timeout`
  # when their client stops reading), as in Puma.
  class Drain
    # How often the taken connections are checked (closing an IO notifies nothing).
    POLL = 0.1

    # Starts draining `server` (stopping now): `seconds` is `drain_timeout`; `context` logs.
    # `restart`: a hot restart, which does not drain (what is open is closed at once); `ended`,
    # asked at each poll: whether a hot restart began meanwhile (the drain then ends at once);
    # `long_lived`, called once when there is something to drain (a taken connection or an
    # open-ended stream): the stop may take the drain time.
    def self.start(context, server, seconds, restart: false, ended: nil, long_lived: nil)
      new(context, server, restart ? 0 : seconds, restart: restart, ended: ended, long_lived: long_lived).tap(&:start)
    end

    # The taken connections still open now: `[io, description, monotonic time taken]` each.
    def self.open_connections
      Native.taken_connections
    end

    # In a child forked from a serving process: its copies of the parent's taken connections
    # are closed (else they would keep each socket open after the parent's app closed it, and
    # its client would never see the end). The parent's descriptors are not affected.
    def self.close_inherited
      Native.taken_connections.each do |io, _|
        io.close
      rescue IOError
        nil
      end
    end

    # The reactor's: the streams it cut at the end of `server`'s drain time, one line each
    # (also for a stop that is not the process's end: worker 0 stopping to fork). `over` begins
    # each line (Drain.over).
    def self.log_cut_responses(context, server, over)
      server.cut_at_drain.each { |what| context.log "#{over} the response still being written to #{what}" }
    rescue RuntimeError
      nil
    end

    # How a line about a connection closed at the end of the drain begins.
    def self.over(seconds, restart: false)
      restart ? "- Restarting (no drain): closing" : "- Drain time (#{seconds_text(seconds)} s) over: closing"
    end

    # A number of seconds for a log line: 10, 2.5.
    def self.seconds_text(seconds)
      seconds.to_f == seconds.to_i ? seconds.to_i.to_s : seconds.to_f.to_s
    end

    def initialize(context, server, seconds, restart: false, ended: nil, long_lived: nil)
      @context = context
      @server = server
      @ended = ended
      @long_lived = long_lived
      @seconds = seconds
      @over = Drain.over(seconds, restart: restart)
      @deadline = now + seconds
      @finishing = false
      @thread = nil
    end

    def start
      @server.end_drain if @seconds.zero?
      open = Drain.open_connections
      notice_long_lived(open)
      if @seconds.positive? && !open.empty?
        @context.log "- Waiting up to #{Drain.seconds_text(@seconds)} s (drain_timeout) for #{count(open.size)} taken by the app " \
                     "(hijacked or upgraded) to close"
      end
      @thread = Thread.new { watch }
    end

    # Ends the drain time now (a hot restart began): the streams are cut and what is still
    # open is shut down.
    def end_now
      @over = Drain.over(0, restart: true)
      @deadline = now
      @server.end_drain
    end

    # Once the server has ended and its pool threads are done: waits until the taken
    # connections are closed, or shut down at the deadline.
    def finish
      @finishing = true
      @thread&.join
    end

    private

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # Polls until every taken connection is closed, or the deadline passed and the ones still
    # open are shut down (a connection taken later, by a request that was running when the stop
    # began, is shut down as soon as it appears). Ends once `finish` was called and nothing is
    # left open (or shut down) to wait for.
    def watch
      shut = {}.compare_by_identity
      loop do
        end_now if @ended && now < @deadline && @ended.call
        open = Drain.open_connections.reject { |io, _| shut.key?(io) }
        notice_long_lived(open)
        if now >= @deadline
          log_cut_responses
          open.each { |io, what, since| shut[io] = shut_down(io, what, since) }
          open = []
        end
        break if @finishing && open.empty?

        sleep POLL
      end
      log_cut_responses
    rescue StandardError => e
      # A stop must not fail here (`finish` joins this thread): what is left closes at exit.
      @context.error "#{@context.log_prefix}! Draining: #{e.message} (#{e.class})"
    end

    def log_cut_responses
      Drain.log_cut_responses(@context, @server, @over)
    end

    # Calls `long_lived` once, when a taken connection or an open-ended stream is open.
    def notice_long_lived(open)
      return unless @long_lived
      return if open.empty? && @server.streams_open.zero?

      long_lived = @long_lived
      @long_lived = nil
      long_lived.call
    end

    def shut_down(io, what, since)
      @context.log "#{@over} the connection taken by #{what}, open #{(now - since).round(1)} s"
      io.shutdown(Socket::SHUT_RDWR)
      true
    rescue IOError, SystemCallError
      true
    end

    def count(n)
      n == 1 ? "1 connection" : "#{n} connections"
    end
  end
end
