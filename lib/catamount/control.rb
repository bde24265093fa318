# frozen_string_literal: true

module Catamount
  # The control server (`activate_control_app` / `--control-url`) and the metrics listener
  # (`metrics_url`) as the process that owns them sees them. The native ControlServer
  # (crates/catamount-control) speaks HTTP, checks the token, routes by the last path segment
  # and refuses what is not allowed; it hands over only commands to carry out. This object
  # carries them out for a role (Single, Cluster::Master), with Puma's answers.
  #
  # It never blocks and starts no thread: the master polls it from its loop (a master must
  # stay single-threaded at every fork), single mode from a thread of its own (`serve_in_thread`).
  class Control
    # What the control server routes (Puma's ten endpoints, and `metrics` when asked for).
    ACTIONS = %w[stop halt restart phased-restart refork reload-worker-directory].freeze
    READS = %w[stats gc-stats].freeze
    OTHERS = %w[gc thread-backtraces].freeze
    OK = '{ "status": "ok" }'
    # The actions every role takes as it takes a signal (queued with `role.request`); the
    # others (refork, reload-worker-directory) depend on the role: `role.control(command)`.
    AS_SIGNAL = { "stop" => "stop", "halt" => "halt", "restart" => "USR2", "phased-restart" => "USR1" }.freeze

    # The listeners the options ask for (nil when none): the control server, the metrics one.
    # Bind failures raise UsageError (one line naming the URL), before the boot lines.
    def self.open(context, options)
      control = (url = options[:control_url]) && Listener.control(url, options)
      metrics = (url = options[:metrics_url]) &&
                Listener.new(Native::ControlServer.new(url, nil, ["metrics"], development?(options)), nil, false)
      control || metrics ? new(context, control, metrics) : nil
    end

    # An `ssl://` URL without cert and key may use the self-signed development certificate,
    # as an app's ssl_bind may: only in these environments.
    def self.development?(options)
      %w[development test].include?(options[:environment])
    end

    # One native server and what it was opened with.
    class Listener
      attr_reader :native, :token, :generated_token

      def self.control(url, options)
        token = options[:control_auth_token]
        generated = false
        if token.nil? || token.empty?
          token = Native.control_token
          generated = true
        elsif token == "none"
          token = nil
        end
        allowed = options[:control_data_only] ? READS.dup : ACTIONS + READS + OTHERS
        allowed << "metrics" if options[:control_metrics]
        new(Native::ControlServer.new(url, token, allowed, Control.development?(options)), token, generated)
      end

      def initialize(native, token, generated)
        @native = native
        @token = token
        @generated_token = generated
        @io = IO.for_fd(native.fd, autoclose: false)
      end

      attr_reader :io

      def url
        @native.url
      end

      # As Puma shows it: `http://` for TCP.
      def display_url
        url.sub(%r{\Atcp://}, "http://")
      end
    end

    def initialize(context, control, metrics)
      @context = context
      @control = control
      @listeners = [control, metrics].compact
      @metrics = metrics
    end

    # The control server's URL and token (for the state file); nil without one.
    def control_url
      @control&.url
    end

    def control_token
      @control&.token
    end

    # The boot lines saying where they listen (and the token made for this run).
    def announce
      @listeners.each { |l| l.native.notes.each { |note| @context.log "* #{l.url}: #{note}" } }
      if @control
        @context.log "* Starting control server on #{@control.display_url}"
        @context.log "* Control server token: #{@control.token}" if @control.generated_token
      end
      @context.log "* Serving metrics on #{@metrics.display_url}/metrics" if @metrics
    end

    # What the owner's wait includes.
    def ios
      @listeners.map(&:io)
    end

    # Seconds until a connection's deadline (the owner's wait is no longer), or nil.
    def timeout
      @listeners.filter_map { |l| l.native.timeout }.min
    end

    # Carries out every command that arrived, for `role`; never blocks. Every command polled
    # is answered, whatever happens while carrying it out (an unanswered one would hold its
    # connection until the process ends).
    def serve(role)
      @listeners.each do |listener|
        listener.native.poll.each do |id, command|
          answered = false
          begin
            listener.native.answer(id, *answer(role, command))
            answered = true
          ensure
            listener.native.answer(id, 500, "text/plain", "Internal error") unless answered
          end
        end
      end
    end

    # Single mode: a thread that waits for commands and carries them out until the control
    # server is closed; an error is logged and the thread goes on serving.
    def serve_in_thread(role)
      Thread.new do
        Thread.current.name = "catamount control"
        loop do
          IO.select(ios, nil, nil, timeout)
          serve(role)
        rescue IOError
          break
        rescue StandardError => e
          @context.error "catamount: control server: #{e.message} (#{e.class})"
          sleep 0.1 # a fault that repeats is not a busy loop
        end
      end
    end

    # Before an exec or an exit: the answers already given get out (bounded).
    def flush
      @listeners.each { |l| l.native.flush(Context::LOG_FLUSH_SECONDS) }
    end

    def close
      @listeners.each { |l| l.native.close }
    end

    # In a forked child: its copies of the sockets go, the owner's keep serving.
    def close_in_child
      @listeners.each { |l| l.native.close_in_child }
    end

    private

    # [status, content type, body] for one routed command.
    def answer(role, command)
      case command
      when "gc"
        GC.start
        ok
      when "gc-stats" then json(GC.stat)
      when "stats" then json(role.stats(reset_max: true))
      when "thread-backtraces" then json(thread_backtraces)
      when "metrics"
        stats = role.stats
        [200, "text/plain; version=0.0.4; charset=utf-8", Native.prometheus(stats, role.memory)]
      else
        if (signal = AS_SIGNAL[command])
          role.request(signal)
          ok
        else
          role.control(command) ? ok : not_available(command)
        end
      end
    rescue StandardError => e
      @context.error "catamount: control command #{command} failed: #{e.message} (#{e.class})"
      [500, "text/plain", "Internal error"]
    end

    def ok
      [200, "application/json", OK]
    end

    def json(value)
      require "json"
      [200, "application/json", JSON.generate(value)]
    end

    # Puma's answer for an action this process cannot take.
    def not_available(command)
      [404, "application/json", "{ \"error\": \"#{command.tr('-', '_')} not available\" }"]
    end

    # Each thread's name as Puma writes it, and its backtrace.
    def thread_backtraces
      Thread.list.map do |thread|
        name = +"Thread: TID-#{thread.object_id.to_s(36)}"
        name << " #{thread['label']}" if thread["label"]
        name << " #{thread.name}" if thread.name
        { name: name, backtrace: thread.backtrace || ["<no backtrace available>"] }
      end
    end
  end
end
