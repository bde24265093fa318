# frozen_string_literal: true

require_relative "support/helper"
require "certificates"

# Responses to clients that read slowly, past the memory bounds (`max_buffered_response`,
# `max_buffered_total`): the rest goes to unlinked temporary files (`max_spilled_total`) and the
# pool threads move on; the clients get every byte, in order. With spilling off, or the disk
# full, a thread waits for its client instead (as a Puma thread always does), and still loses
# nothing. Every reader here asks for /pattern?N (byte I is I % 251: a piece out of place shows)
# through a 4 KiB receive buffer and reads nothing until the test says so.
class TestResponseSpill < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  parallelize_me!

  # Twice what the kernel's send buffer may grow to (net.ipv4.tcp_wmem's 4 MiB here): a socket
  # whose client reads nothing still takes that much of an answer.
  ANSWER = 8 << 20
  PIECE = 256 << 10 # the server's hand-over piece (hand_over::PIECE)
  CYCLE = (0...251).map(&:chr).join.b.freeze

  def test_past_the_memory_bounds_answers_spill_to_disk_and_threads_move_on
    config = ["max_buffered_response 256 * 1024", "max_buffered_total 512 * 1024"]
    with_server(config, threads: 2) do |server, control|
      readers = Array.new(12) { slow_reader(server.port) }
      readers.each { |r| assert r.wait_readable(30), "a slow reader got no answer" }
      # Two threads, twelve clients reading nothing: the app answers another request only if
      # no thread waits for one of them.
      assert_equal "hello free", get(server.port, "/hello?free").body
      stats = control_stats(control)
      assert_operator stats["response_bytes_spilled"], :>, 4 * ANSWER, "most of the 96 MiB went to disk: #{stats}"
      assert_operator stats["response_bytes_buffered"], :<=, (512 << 10) + (2 * PIECE), "memory stayed bounded: #{stats}"
      read_all_and_check(readers)
      assert wait_until(timeout: 20) { control_stats(control).values_at("response_bytes_buffered", "response_bytes_spilled") == [0, 0] },
             "spill files let go once sent: #{control_stats(control)}"
      refute_match(/spill/i, server.stderr)
    end
  end

  # Over TLS the reactor reads the spill file and encrypts it a piece at a time (no sendfile).
  def test_over_tls_spilled_answers_arrive_whole
    config = ["max_buffered_response 256 * 1024", "max_buffered_total 512 * 1024"]
    Dir.mktmpdir("spill-tls") do |certs|
      certificates(certs)
      bind = "ssl://127.0.0.1:0?cert=#{certs}/cert.pem&key=#{certs}/key.pem"
      with_server(config, threads: 2, bind: bind) do |server, control|
        port = Integer(server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1])
        readers = Array.new(4) { tls_slow_reader(port, "#{certs}/ca.pem") }
        assert wait_until(timeout: 30) { control_stats(control)["response_bytes_spilled"].positive? },
               "nothing spilled: #{control_stats(control)}"
        read_all_and_check(readers)
        assert wait_until(timeout: 20) { control_stats(control)["response_bytes_spilled"].zero? }
      end
    end
  end

  def test_with_spilling_off_a_thread_waits_for_its_client_and_loses_nothing
    config = ["max_buffered_response 256 * 1024", "max_buffered_total 512 * 1024", "max_spilled_total 0"]
    with_server(config, threads: 2) do |server, control|
      readers = Array.new(2) { slow_reader(server.port) }
      readers.each { |r| assert r.wait_readable(30), "a slow reader got no answer" }
      assert wait_until(timeout: 20) { control_stats(control)["pool_capacity"].zero? },
             "both threads wait for their clients: #{control_stats(control)}"
      assert_equal 0, control_stats(control)["response_bytes_spilled"]
      read_all_and_check(readers)
      assert_equal "hello after", get(server.port, "/hello?after").body
    end
  end

  # TMPDIR on a 1 MiB tmpfs: the spill files fill it, the write that does not fit fails, and that
  # response's thread waits for its client instead (logged once, not once per response); every
  # client still gets every byte. Once the files are gone, spilling works again (logged).
  def test_a_full_disk_under_the_spill_files_falls_back_to_waiting
    skip "needs root to mount a small tmpfs" unless Process.uid.zero?
    Dir.mktmpdir("spill") do |dir|
      spool = File.join(dir, "spool")
      Dir.mkdir(spool)
      skip "could not mount a 1 MiB tmpfs at #{spool}" unless system("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", spool)
      begin
        config = ["max_buffered_response 128 * 1024", "max_buffered_total 256 * 1024"]
        with_server(config, threads: 4, env: { "TMPDIR" => spool }) do |server, control|
          readers = Array.new(4) { slow_reader(server.port) }
          readers.each { |r| assert r.wait_readable(30), "a slow reader got no answer" }
          assert server.wait_for(/Could not spill a response for a slow client to a temporary file \(No space left on device/,
                                 stream: :stderr, timeout: 20), server.stderr
          read_all_and_check(readers)
          assert wait_until(timeout: 20) { control_stats(control)["response_bytes_spilled"].zero? }
          again = slow_reader(server.port)
          assert again.wait_readable(30)
          assert server.wait_for(/Spilling responses for slow clients works again/, stream: :stderr, timeout: 20), server.stderr
          read_all_and_check([again])
          # (The new reader's answer fills the tmpfs again: that failure may follow the line.)
          before_recovery = server.stderr.split("works again").first
          assert_equal 1, before_recovery.scan("Could not spill").size, "logged once while it kept failing:\n#{server.stderr}"
        end
      ensure
        system("umount", spool)
      end
    end
  end

  def test_bad_sizes_are_refused_with_the_line
    Dir.mktmpdir("spill") do |dir|
      File.write(File.join(dir, "puma.rb"), "threads 1, 1\nmax_spilled_total \"lots\"\n")
      server = start_server("-C", File.join(dir, "puma.rb"), "-b", "tcp://127.0.0.1:0", app: "soak.ru", boot: false)
      assert server.wait_exit(timeout: 20), "the server should refuse to boot"
      assert_match(/puma\.rb:2.*max_spilled_total: "lots" is not a whole number of bytes/, server.stderr)
    end
  end

  private

  # A server of soak.ru with these config lines and a control server (token "t") for stats that
  # need no pool thread.
  def with_server(lines, threads:, env: {}, bind: "tcp://127.0.0.1:0")
    Dir.mktmpdir("spill") do |dir|
      File.write(File.join(dir, "puma.rb"), "#{lines.join("\n")}\n")
      server = start_server("-t", "#{threads}:#{threads}", "-C", File.join(dir, "puma.rb"), "-b", bind,
                            "--control-url", "tcp://127.0.0.1:0", "--control-token", "t",
                            app: "soak.ru", chdir: dir, env: env)
      control = Integer(server.stdout[%r{Starting control server on http://127\.0\.0\.1:(\d+)}, 1])
      yield server, control
    end
  end

  def control_stats(control_port)
    response = get(control_port, "/stats?token=t")
    assert_equal 200, response.status, response.body
    JSON.parse(response.body)
  end

  # A client with a 4 KiB receive buffer that asks for ANSWER bytes and reads nothing yet.
  def slow_reader(port)
    socket = Socket.new(:INET, :STREAM)
    socket.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
    socket.connect(Socket.sockaddr_in(port, "127.0.0.1"))
    socket.write("GET /pattern?#{ANSWER} HTTP/1.1\r\nHost: spill\r\nConnection: close\r\n\r\n")
    socket
  end

  # slow_reader over TLS: the handshake done, the request sent, nothing read.
  def tls_slow_reader(port, ca)
    socket = Socket.new(:INET, :STREAM)
    socket.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
    socket.connect(Socket.sockaddr_in(port, "127.0.0.1"))
    context = OpenSSL::SSL::SSLContext.new
    context.set_params(verify_mode: OpenSSL::SSL::VERIFY_PEER, ca_file: ca)
    tls = OpenSSL::SSL::SSLSocket.new(socket, context)
    tls.sync_close = true
    tls.hostname = "localhost"
    Timeout.timeout(20) { tls.connect }
    tls.write("GET /pattern?#{ANSWER} HTTP/1.1\r\nHost: spill\r\nConnection: close\r\n\r\n")
    tls
  end

  # Reads every reader to its end at once (one thread each) and checks each body byte by byte.
  def read_all_and_check(readers)
    bodies = readers.map { |r| Thread.new { read_to_close(r) } }.map { |t| t.join(60)&.value }
    bodies.each_with_index do |text, i|
      refute_nil text, "reader #{i} did not finish"
      head, body = text.split("\r\n\r\n", 2)
      assert_match(%r{\AHTTP/1\.1 200 }, head)
      assert_equal ANSWER, body.bytesize, "reader #{i}'s body length"
      assert body == expected, "reader #{i}'s body is not the pattern (first difference at #{first_difference(body)})"
    end
  end

  def read_to_close(socket)
    text = +""
    loop do
      chunk = socket.read_nonblock(1 << 16, exception: false)
      break if chunk.nil?

      if chunk.is_a?(Symbol) # :wait_readable (or, for TLS, :wait_writable)
        break unless IO.select([socket], chunk == :wait_writable ? [socket] : nil, nil, 30)

        next
      end
      text << chunk
    end
    text
  rescue EOFError, OpenSSL::SSL::SSLError
    text
  ensure
    socket.close
  end

  def expected
    @expected ||= (CYCLE * ((ANSWER / CYCLE.bytesize) + 1)).byteslice(0, ANSWER)
  end

  def first_difference(body)
    (0...ANSWER).find { |i| body.getbyte(i) != expected.getbyte(i) }
  end
end
