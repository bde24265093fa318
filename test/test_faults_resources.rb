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

  # Request bodies past the in-memory limit (112 KiB) are spooled to an unlinked file under
  # TMPDIR, here a 1 MiB tmpfs. A body that does not fit is answered 500, not 413: the request
  # broke no limit of ours (the same body fits once space frees up), the server failed to store
  # it. The server logs it, serves the next requests, and takes a large body again once there is
  # room: the failed body's file was unlinked and closed, so its space came back at once.
  def test_a_full_disk_under_the_body_spool
    skip "needs root to mount a small tmpfs" unless Process.uid.zero?
    Dir.mktmpdir do |dir|
      spool = File.join(dir, "spool")
      Dir.mkdir(spool)
      skip "could not mount a 1 MiB tmpfs at #{spool}" unless system("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", spool)
      begin
        server = launch(["-t", "2:2", "-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "kitchen.ru")],
                        env: { "TMPDIR" => spool }, boot: true)
        statuses = []
        too_big = upload(server.port, 2 << 20)
        chunked = upload(server.port, 2 << 20, chunked: true)
        statuses += [too_big, chunked].map(&:status)
        statuses << get(server.port, "/").status
        File.binwrite(File.join(spool, "filler"), "f" * (900 << 10))
        full = upload(server.port, 300 << 10)
        statuses << full.status
        File.delete(File.join(spool, "filler"))
        fits = upload(server.port, 800 << 10)
        statuses << fits.status
        report("full disk under the body spool", sent: statuses.size, answered: statuses.count(200),
                                                 failed: statuses.count { |st| st != 200 },
                                                 note: "3 bodies that did not fit: 500 each, as asserted")
        assert_equal [500, 500, 200, 500, 200], statuses
        assert_equal (800 << 10).to_s, fits.body, "the echo of the body that fitted"
        # The log writer thread writes a moment after the answer went out (bounded wait).
        logged = -> { server.stderr.scan(/could not buffer a request body to disk: No space left on device/).size }
        wait_until { logged.call >= 3 }
        assert_equal 3, logged.call, server.stderr
      ensure
        server&.kill
        system("umount", spool)
      end
    end
  end

  MAX_HEAD = 112 * 1024 # catamount_http::Limits' default
  CONNECTIONS = 200

  # A head of eight 13,000-byte fields: just under the 112 KiB head limit, with no field past
  # the 80 KiB value limit. `fields: 9` is over it.
  def huge_head(fields: 8)
    "GET / HTTP/1.1\r\nHost: x\r\n" + (1..fields).map { |i| "X-Fill-#{i}: #{'v' * 13_000}\r\n" }.join
  end

  # Many connections each holding a head just under the limit (its last CRLF not sent): what
  # the server holds for them is bounded by the limit, CONNECTIONS x MAX_HEAD (22 MiB here),
  # and RSS may grow by at most twice that (a buffer grows by doubling) plus 16 MiB of slack.
  # Meanwhile a head over the limit gets 431 and a plain request is served; the held heads,
  # completed, are all answered.
  def test_many_heads_just_under_the_limit
    server = start_server("-t", "2:2", app: "stats.ru")
    in_bytes = -> { JSON.parse(get(server.port, "/stats").body).dig("catamount", "bytes_in") }
    rss_before = rss_kib(server.pid)
    base = in_bytes.call
    head = huge_head
    assert_operator head.bytesize + 2, :<, MAX_HEAD
    socks = Array.new(CONNECTIONS) { connect(server.port).tap { |s| s.write(head) } }
    assert wait_until(timeout: 30) { in_bytes.call - base >= CONNECTIONS * head.bytesize }, "the server read every head"
    grown = rss_kib(server.pid) - rss_before
    over = raw_request(server.port, "#{huge_head(fields: 9)}\r\n").status
    plain = get(server.port, "/").status
    socks.each { |s| s.write("\r\n") }
    statuses = socks.map { |s| read_response(s, timeout: 30).status }
    bound = (2 * CONNECTIONS * MAX_HEAD / 1024) + (16 << 10)
    report("heads just under the limit", sent: statuses.size + 2, answered: statuses.count(200) + [plain].count(200),
                                         failed: statuses.count { |st| st != 200 } + [over].count { |st| st != 431 },
                                         note: "#{CONNECTIONS} x #{head.bytesize} bytes held: RSS +#{grown / 1024} MiB, bound #{bound / 1024} MiB; over the limit: #{over}")
    assert_equal 431, over
    assert_equal 200, plain
    assert_equal [200] * CONNECTIONS, statuses
    assert_operator grown, :<, bound, "RSS grew by more than the limits allow"
  ensure
    socks&.each(&:close)
  end

  private

  # POSTs `size` bytes to /echo (a writer thread, so the answer is read even when the server
  # answers before the body is all sent) and returns the response; the body echoed is replaced
  # by its size.
  def upload(port, size, chunked: false)
    sock = connect(port)
    framing = chunked ? "Transfer-Encoding: chunked" : "Content-Length: #{size}"
    sock.write("POST /echo HTTP/1.1\r\nHost: x\r\n#{framing}\r\nConnection: close\r\n\r\n")
    writer = Thread.new do
      left = size
      while left.positive?
        piece = "u" * [left, 64 << 10].min
        sock.write(chunked ? "#{piece.bytesize.to_s(16)}\r\n#{piece}\r\n" : piece)
        left -= piece.bytesize
      end
      sock.write("0\r\n\r\n") if chunked
    rescue SystemCallError, IOError
      nil # the server answered and closed before the whole body went
    end
    response = read_response(sock, timeout: 30)
    response.body = response.body.bytesize.to_s
    response
  ensure
    writer&.join(10)
    sock&.close
  end
end
