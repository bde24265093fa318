# frozen_string_literal: true

require_relative "support/helper"
require "steady_load"
require "soak"

# Slow clients at scale: 1,000 slowloris connections (a request head trickled a byte at a time)
# and 1,000 slow readers (each asks for READER_BODY bytes through a 4 KiB receive buffer and
# reads a byte now and then) held at once against a `-t 5` server, beside a normal keep-alive
# and fresh-connection load. Every normal request must be answered while the 2,000 are held (no
# pool thread is held by a slow client), the 2,000 must still be open when the load is done, and
# after they leave the server's stats are back to idle. Memory per slow connection is measured
# and printed (the figures in docs/architecture.md come from this test). Rates are the
# benchmark's business (`make bench`, "slow clients"), never asserted here.
class TestSlowClients < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  EACH = 1000
  # Larger than what the sockets hold (the client's 4 KiB receive buffer and the server's send
  # buffer), so most of each answer waits in the server for its reader; small enough that 1,000
  # of them stay under the 64 MiB the server lets pool threads hand over to slow readers in all
  # (past that bound a thread goes at its own client's pace, by design: see "Bounded
  # hand-overs" in docs/architecture.md).
  READER_BODY = 48 * 1024
  THREADS = 5

  def test_two_thousand_slow_clients_hold_no_thread
    raise_fd_limit(2 * EACH + 1000)
    Dir.mktmpdir("slow") do |dir|
      server = start_server("-t", "#{THREADS}:#{THREADS}", app: "soak.ru", chdir: dir)
      idle = rss_kib(server.pid)
      loris = open_slowloris(server.port)
      assert wait_until(timeout: 30) { stats(server.port)[:connections_open] > EACH }, "the slowloris connections are open in the server"
      with_loris = rss_kib(server.pid)
      readers = open_slow_readers(server.port)
      with_both = rss_kib(server.pid)
      assert_operator stats(server.port)[:connections_open], :>=, 2 * EACH + 1, "the 2,000 are open in the server"

      load = SteadyLoad.new(server.port, path: "/hello?normal", keep_alive: 4, fresh: 2, timeout: 30)
      assert load.wait_for_more(3000, timeout: 120), "normal requests stalled beside the slow clients: #{load.summary}"
      load.stop
      assert_empty load.failures, load.summary
      assert_equal ["hello normal"], load.bodies.keys
      assert_equal 2 * EACH, (loris + readers).count { |s| open?(s) }, "the slow clients were all still connected"
      read = readers.sum { |r| r[:read] }
      report = format("Slow clients (-t %d): %d slowloris and %d slow readers held; normal load %s; " \
                      "RSS idle %.1f MiB, +%.1f KiB per slowloris connection, +%.1f KiB per slow reader " \
                      "(%d-byte answers, %d bytes read of them in all)",
                      THREADS, EACH, EACH, load.summary, idle / 1024.0, (with_loris - idle).to_f / EACH,
                      (with_both - with_loris).to_f / EACH, READER_BODY, read)
      warn report

      (loris + readers).each(&:close)
      assert wait_until(timeout: 60) { idle?(stats(server.port)) }, "not back to idle: #{stats(server.port)}\n#{report}"
    ensure
      (loris.to_a + readers.to_a).each { |s| s.close unless s.closed? }
    end
  end

  private

  # Raises this process's soft descriptor limit (the server inherits it) to `wanted`, bounded by
  # the hard limit; skips when the hard limit is below it.
  def raise_fd_limit(wanted)
    soft, hard = Process.getrlimit(:NOFILE)
    return if soft >= wanted

    skip "needs #{wanted} descriptors, the hard limit is #{hard}" if hard != Process::RLIM_INFINITY && hard < wanted
    Process.setrlimit(:NOFILE, wanted, hard)
  end

  # EACH connections that send a request head a byte at a time and never end it: the first
  # bytes now, then one more byte each, round after round, until the test is done with them.
  def open_slowloris(port)
    sockets = Array.new(EACH) { connect(port) }
    head = "GET /hello?slow HTTP/1.1\r\nHost: slow\r\nX-Slow: "
    sockets.each { |s| s.write(head[0]) }
    @trickle = Thread.new do
      sent = 1
      until sockets.any?(&:closed?)
        byte = sent < head.bytesize ? head[sent] : "a"
        sockets.each { |s| s.write_nonblock(byte, exception: false) }
        sent += 1
        sleep 0.5
      end
    rescue IOError, SystemCallError
      nil # the test closed them
    end
    sockets
  end

  # EACH connections with a 4 KiB receive buffer, each asking for READER_BODY bytes; once every
  # one has its first byte (its answer was made), a thread reads one byte of one of them now and
  # then. Each is a SlowReader (an IO with the count of bytes read).
  def open_slow_readers(port)
    readers = Array.new(EACH) do
      socket = Socket.new(:INET, :STREAM)
      socket.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
      socket.connect(Socket.sockaddr_in(port, "127.0.0.1"))
      socket.write("GET /big?#{READER_BODY} HTTP/1.1\r\nHost: slow\r\n\r\n")
      SlowReader.new(socket)
    end
    readers.each { |r| assert r.read_byte(timeout: 60), "a slow reader got no answer" }
    @nibbler = Thread.new do
      until readers.any?(&:closed?)
        readers.sample(10).each { |r| r.read_byte(timeout: 0) }
        sleep 0.1
      end
    rescue IOError, SystemCallError
      nil
    end
    readers
  end

  # A slow reader's socket and how much it read.
  class SlowReader
    def initialize(socket)
      @socket = socket
      @read = 0
    end

    def [](key)
      key == :read ? @read : nil
    end

    def read_byte(timeout:)
      return false unless @socket.wait_readable(timeout)

      byte = @socket.read_nonblock(1, exception: false)
      return false unless byte.is_a?(String)

      @read += 1
      true
    end

    def to_io
      @socket
    end

    def closed?
      @socket.closed?
    end

    def close
      @socket.close unless @socket.closed?
    end
  end

  # Open, as far as the client can tell: nothing says the server closed it.
  def open?(socket)
    io = socket.respond_to?(:to_io) ? socket.to_io : socket
    data = io.recv_nonblock(1, Socket::MSG_PEEK, exception: false)
    data == :wait_readable || (data.is_a?(String) && !data.empty?)
  rescue SystemCallError
    false
  end

  def stats(port)
    response = get(port, "/stats")
    assert_equal 200, response.status
    JSON.parse(response.body, symbolize_names: true)
  end

  # Nothing left but the stats request itself: one connection, no backlog, every thread free
  # but the one answering.
  def idle?(stats)
    stats[:connections_open] == 1 && stats[:backlog].zero? && stats[:pool_capacity] == THREADS - 1
  end

  def rss_kib(pid)
    File.read("/proc/#{pid}/status")[/^VmRSS:\s+(\d+)/, 1].to_i
  end
end
