# frozen_string_literal: true

module Catamount
  # Turns for the requests of one fiber-mode thread while one of them never waits.
  #
  # Ruby 3.1 switches fibers only where a fiber waits, so a CPU-bound request would hold up the
  # requests beside it on its thread until it ended, where threads would have given them turns
  # (the GVL passes every 100 ms). This watcher looks at every fiber-mode thread each SLICE: a
  # thread still in the same fiber run as at its last look, with other fibers to run, gets a
  # one-shot line TracePoint on that thread only; at the running fiber's next line it gives its
  # turn back to the loop, which runs the thread's other ready fibers, polls, and then resumes
  # it (FiberScheduler#give_turn). A thread whose fibers all wait costs nothing more than the
  # look.
  #
  # The watcher is a Ruby thread (enabling a TracePoint needs the GVL). While a fiber runs Ruby
  # code, the watcher gets the GVL at Ruby's next thread switch (at most 100 ms), so a busy
  # fiber gives a turn every 100–150 ms, as a busy thread does.
  module FiberTimeslice
    SLICE = 0.05

    @schedulers = []
    @lock = Mutex.new
    @watcher = nil

    class << self
      # Watches `scheduler` until #forget; starts the watcher in this process on first use
      # (a forked worker starts its own).
      def watch(scheduler)
        @lock.synchronize do
          # A forked child (fork_worker) inherits its parent's list; their threads are gone.
          @schedulers.select!(&:alive?)
          @schedulers << scheduler
          @watcher = nil unless @watcher&.alive?
          @watcher ||= Thread.new { run }
        end
      end

      def forget(scheduler)
        @lock.synchronize { @schedulers.delete(scheduler) }
      end

      private

      def run
        Thread.current.name = "catamount fiber turns"
        loop do
          sleep SLICE
          @lock.synchronize { @schedulers.dup }.each do |scheduler|
            scheduler.check_turn if scheduler.alive?
          end
        end
      end
    end
  end
end
