# frozen_string_literal: true

require "socket"

module Bench
  # A Prometheus scraper stand-in: GETs /metrics once a second from a thread while a block runs
  # (the load on a server with metrics on), each GET bounded, the thread stopped with the block.
  class Scraper
    INTERVAL = 1.0
    TIMEOUT = 5

    attr_reader :ok, :failed

    def initialize(port)
      @port = port
      @ok = 0
      @failed = 0
    end

    # Runs the block with the scraper beside it; returns the block's value.
    def during
      stop, stopping = IO.pipe # readable once the block is done: ends the wait between GETs
      thread = Thread.new do
        loop do
          scrape ? @ok += 1 : @failed += 1
          break if stop.wait_readable(INTERVAL)
        end
      end
      yield
    ensure
      stopping&.close
      thread&.join(TIMEOUT + INTERVAL + 1) || thread&.kill
      stop&.close
    end

    private

    # One GET with a new connection, as Prometheus does by default; true for a 200 with the
    # server's request counter in it.
    def scrape
      Socket.tcp("127.0.0.1", @port, connect_timeout: TIMEOUT) do |sock|
        sock.write("GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        answer = +""
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + TIMEOUT
        loop do
          left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
          return false unless left.positive? && sock.wait_readable(left)

          chunk = sock.read_nonblock(65_536, exception: false)
          break if chunk.nil?

          answer << chunk unless chunk == :wait_readable
        end
        answer.start_with?("HTTP/1.1 200") && answer.include?("catamount_requests_total")
      end
    rescue SystemCallError, IOError
      false
    end
  end
end
