# frozen_string_literal: true

require_relative "support/helper"
require "faults"

# Faults under load, the process's resources: out of file descriptors, a full disk under the
# request-body spool, and many heads near the size limit. The server keeps what it has, says so
# once, does not spin, and recovers when the resource comes back. Each test prints its counts.
class TestFaultsResources < Minitest::Test
  include Support::ServerTest
  include Support::Faults
  parallelize_me!

  GET = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
  GET_CLOSE = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

  # `ulimit -n 64`: connections are opened until the server cannot accept more (the rest wait
  # in the kernel's backlog). Those it holds are still answered, the exhaustion is logged once,
  # the reactor backs off instead of spinning, and once connections close the waiting ones are
  # taken and answered.
  def test_out_of_file_descriptors
    server = launch(["-t", "2:2", "-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "kitchen.ru")],
                    boot: true, redirects: { rlimit_nofile: 64 })
    socks = []
    socks << connect(server.port).tap { |s| s.write(GET) } until server.stderr.include?("Too many open files") || socks.size >= 200
    server.wait_for(/Too many open files/, stream: :stderr)
    30.times { socks << connect(server.port).tap { |s| s.write(GET) } }
    held = client_connections(server.pid)
    assert_operator held, :>, 10, "the server accepted connections before its descriptors ran out"
    assert_operator socks.size, :>, held, "some connections wait in the backlog"
    # Held connections are answered (the first ones: the kernel hands them over in order).
    statuses = socks.first(held).map { |s| read_response(s, timeout: 20).status }
    assert_equal [200] * held, statuses

    # A window of 2 s with every descriptor in use and connections pending: a spinning accept
    # loop would burn all of it (the window is a measurement, not a wait for an event).
    cpu = cpu_seconds(server.pid)
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    sleep 2
    share = (cpu_seconds(server.pid) - cpu) / (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
    assert_operator share, :<, 0.5, "the server spun while out of descriptors"
    assert_equal 1, server.stderr.scan(/Too many open files/).size, "logged once:\n#{server.stderr}"

    # Descriptors free up: every connection that waited is taken and answered (each closed once
    # answered: more may wait than the server has descriptors for).
    socks.shift(held).each(&:close)
    waiting = socks.map { |s| read_response(s, timeout: 30).status.tap { s.close } }
    report("out of descriptors", sent: statuses.size + waiting.size, answered: (statuses + waiting).count(200),
                                 failed: (statuses + waiting).count { |s| s != 200 },
                                 note: "#{held} connections held, #{waiting.size} waited in the backlog; CPU #{(share * 100).round}% of the window")
    assert_equal [200] * waiting.size, waiting
    assert_match(/Listen loop: accepting again \(\d+ accepts failed\)/, server.stderr)
    assert_equal 200, get(server.port, "/").status
  ensure
    socks&.each(&:close)
  end
end
