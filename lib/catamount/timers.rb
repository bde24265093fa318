# frozen_string_literal: true

module Catamount
  # `launcher.every(interval) { }` for plugins: a block run every `interval` seconds until it
  # returns `:done`; an error is reported and ends it. A cluster master runs its timers on its
  # own loop (`run_due`), because it keeps a single thread so that every fork copies just that
  # one; elsewhere each timer has a thread (`Timers.thread`).
  class Timers
    Timer = Struct.new(:interval, :due, :block)

    def initialize(err)
      @err = err
      @timers = []
    end

    def add(interval, now, block)
      @timers << Timer.new(interval, now + interval, block)
    end

    # Runs the timers due at `now`; returns when the next one is (or nil).
    def run_due(now)
      @timers.reject! do |timer|
        next false if timer.due > now

        timer.due = now + timer.interval
        Timers.call(timer.block, @err) == :done
      end
      @timers.map(&:due).min
    end

    def self.thread(interval, err, block)
      Thread.new do
        loop do
          sleep interval
          break if call(block, err) == :done
        end
      end
    end

    def self.call(block, err)
      block.call
    rescue StandardError => e
      err.puts "catamount: timer #{block.source_location&.join(':')} failed: #{e.message} (#{e.class})"
      :done
    end
  end
end
