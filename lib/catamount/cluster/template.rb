# frozen_string_literal: true

module Catamount
  module Cluster
    # Worker 0 as the template (`fork_worker`, and after a phased restart of a preloaded app):
    # it serves between a `0` and the next `-1` from the master's fork pipe (pipes.rb) and forks
    # the other workers only in between, when its reactor and pool threads have ended (a fork
    # copies only the thread that calls it; a native thread holding a lock at that moment would
    # leave it locked forever). It begins stopped: the first workers are forked from it before
    # it serves.
    class Template
      # `worker`: the Worker this process is (it starts serving and forks); `server` and
      # `pipes`: its own.
      def initialize(context, worker, server:, pipes:, options:, app:, hook_data:)
        @context = context
        @worker = worker
        @server = server
        @pipes = pipes
        @options = options
        @app = app
        @hook_data = hook_data
        @state = :stopped
        @pool = nil
      end

      # Until TERM and the server has stopped. `events`: the worker's queue (signals,
      # `:finished`), fed here with the master's commands too.
      def serve(events)
        @events = events
        @pipes.forward_commands(events)
        stopping = false
        commands = []
        loop do
          case (event = events.pop)
          when :hup then @context.reopen_logs(@options)
          when :lost
            @context.error "#{@context.log_prefix}! Worker 0: a thread is lost to request_timeout; " \
                           "stopping (its other requests finish), the master starts a new one"
            events << :term
          when :term
            stopping = true
            @server.close_listeners # as Worker does on TERM: nothing is served or forked any more
            stop_serving if @state == :serving
            @worker.start_drain(@options)
          when :finished
            @pool.join
            Drain.log_cut_responses(@context, @server, Drain.over(@options[:drain_timeout])) unless stopping
            # Ended without being asked to (the reactor failed): this worker is done.
            stopping = true if @state == :serving
            @state = :stopped
            run_hooks(:before_refork) unless stopping
          when Integer then commands << event
          when Pipes::Phase then @worker.sibling_phase = event.number
          end
          if stopping && @state == :stopped
            @worker.finish_drain
            break
          end
          next if stopping

          run_commands(commands)
        end
      end

      private

      def run_hooks(name)
        @context.run_hooks(name, keyed: @hook_data)
      end

      def stop_serving
        @server.stop
        @state = :stopping
      end

      # Carries out the commands the state allows, in order. A fork waits until the server has
      # stopped (`:finished`).
      def run_commands(commands)
        while (command = commands.first)
          if command == Pipes::REFORK_DONE
            run_hooks(:after_refork)
          elsif command == Pipes::SERVE
            break if @state == :stopping

            if @state == :stopped
              @server.rearm
              @pool = @worker.start_serving(@app, @events)
              @state = :serving
            end
          else
            stop_serving if @state == :serving
            break if @state == :stopping

            @worker.fork_sibling(command, @options, @app) if command.positive?
          end
          commands.shift
        end
      end
    end
  end
end
