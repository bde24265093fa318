# frozen_string_literal: true

module Catamount
  # The pool manager of a serving process (single mode, or a cluster worker): starts a Ruby
  # thread each time the native side asks for one. Each thread runs the thread hooks around its
  # life (`before_thread_exit` when it is trimmed or the server stops, not when it dies by an
  # exception). The manager ends once every pool thread has, but for threads lost to
  # `request_timeout`.
  module Pool
    # Returns the manager thread; it ends once every pool thread has.
    def self.start(context, server, app)
      Thread.new do
        workers = []
        fibers = context.options[:fiber_scheduler] && context.options[:max_fibers_per_thread]
        while server.next_pool_action == :spawn
          workers << Thread.new do
            context.run_hooks(:before_thread_start)
            if fibers
              FiberScheduler.run(server, app, fibers)
            else
              server.run_worker(app)
            end
            context.run_hooks(:before_thread_exit)
          end
        end
        timeouts = context.options[:request_timeout]
        workers.each { |thread| timeouts ? join_unless_lost(thread, server) : thread.join }
      end
    end

    # A thread lost to `request_timeout` (stuck where no exception reaches it) may never end: a
    # stop does not wait for it.
    def self.join_unless_lost(thread, server)
      nil until thread.join(0.5) || server.lost_threads.include?(thread)
    end
  end
end
