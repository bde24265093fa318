# frozen_string_literal: true

require_relative "support/helper"
require "steady_load"
require "faults"

# Faults under load, clients: connections reset (SO_LINGER 0, then close) in the middle of a
# request head, of a large upload, of a large streamed body and of a large file. Beside them a
# steady load goes on unharmed; afterwards the server holds nothing (no backlog, every thread
# idle, no connection open but the one asking) and its stderr says nothing about them.
class TestFaultsClients < Minitest::Test
  include Support::ServerTest
  include Support::Faults
  parallelize_me!

  STREAM_PARTS = 4096 # of 64 KiB: 256 MiB, far more than any socket buffer holds
  FILE_SIZE = 64 << 20

  # /stream yields 64 KiB parts and, on close, records how many it yielded (in DIR/streams);
  # /file is a 64 MiB file sent with sendfile; /upload reads its body; /stats answers the stats.
  APP = <<~RUBY
    require "json"
    dir = ENV.fetch("FAULTS_DIR")
    run lambda { |env|
      case env["PATH_INFO"]
      when "/stats" then [200, {}, [JSON.generate(Catamount.stats)]]
      when "/upload" then [200, {}, [env["rack.input"].read.bytesize.to_s]]
      when "/file"
        body = Object.new
        body.define_singleton_method(:to_path) { File.join(dir, "big") }
        body.define_singleton_method(:each) { |&b| b.call(File.binread(File.join(dir, "big"))) }
        [200, { "content-length" => File.size(File.join(dir, "big")).to_s }, body]
      when "/stream"
        body = Object.new
        yielded = 0
        body.define_singleton_method(:each) do |&b|
          #{STREAM_PARTS}.times { b.call("s" * 65_536); yielded += 1 }
        end
        body.define_singleton_method(:close) { File.write(File.join(dir, "streams"), "\#{yielded}\\n", mode: "a") }
        [200, {}, body]
      else [200, { "content-type" => "text/plain" }, ["ok"]]
      end
    }
  RUBY

  def test_resets_mid_request_and_mid_response_leave_nothing_behind
    Dir.mktmpdir do |dir|
      File.write("#{dir}/app.ru", APP)
      File.open("#{dir}/big", "wb") { |f| f.truncate(FILE_SIZE) }
      # Each departing stream may have had max_buffered_response in memory when its client left
      # (16 MiB by default: 80 MiB for five), and glibc need not give freed memory back: RSS
      # would then measure the allocator's high-water mark, not what the server kept. With 1 MiB
      # the rest spills to a file, so what stays in RSS is what the server still holds.
      File.write("#{dir}/config.rb", "max_buffered_response 1024 * 1024\n")
      server = launch(["-t", "2:4", "-C", "#{dir}/config.rb", "-b", "tcp://127.0.0.1:0", "#{dir}/app.ru"],
                      env: { "FAULTS_DIR" => dir }, boot: true)
      rss_before = rss_kib(server.pid)
      load = SteadyLoad.new(server.port, keep_alive: 1, fresh: 1)
      resets = reset_clients(server.port)
      assert load.wait_for_more(100), load.summary
      load.stop
      assert wait_until(timeout: 30) { File.readlines("#{dir}/streams").size == resets[:stream] rescue false },
             "every stream was closed"
      streamed = File.readlines("#{dir}/streams").map(&:to_i)
      after = nil
      settled = wait_until(timeout: 30) do
        after = stats(server.port)
        after["connections_open"] == 1 && after["backlog"].zero? && after["busy_threads"] == 1 &&
          after["pool_capacity"] == after["max_threads"] - 1
      end
      report("client resets", sent: load.ok + load.failures.size, answered: load.ok, failed: load.failures.size,
                              note: "the steady load's; beside it #{resets.map { |k, v| "#{v} reset mid-#{k}" }.join(', ')}; " \
                                    "RSS #{rss_before / 1024} -> #{rss_kib(server.pid) / 1024} MiB")
      assert settled, "back to idle (the stats request is the one connection and busy thread): #{after.inspect}"
      assert_empty load.failures, load.summary
      assert streamed.all? { |n| n < STREAM_PARTS }, "a stream stopped when its client left: #{streamed}"
      assert_operator rss_kib(server.pid) - rss_before, :<, 64 * 1024, "no memory kept for the departed clients"
      assert_equal "", server.stderr, "nothing logged about departed clients"
    ensure
      kill_named_workers(server)
    end
  end

  private

  def stats(port)
    JSON.parse(get(port, "/stats").body)
  end

  # Each kind of reset a few times; returns how many of each.
  def reset_clients(port)
    counts = Hash.new(0)
    20.times do
      sock = connect(port)
      sock.write("GET / HTTP/1.1\r\nHost: x\r\nX-Half: a")
      reset!(sock)
      counts[:head] += 1
    end
    5.times do
      sock = connect(port)
      sock.write("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: #{20 << 20}\r\n\r\n")
      sock.write("u" * (1 << 20))
      reset!(sock)
      counts[:upload] += 1
    end
    { stream: "/stream", file: "/file" }.each do |kind, path|
      5.times do
        sock = connect(port)
        sock.write("GET #{path} HTTP/1.1\r\nHost: x\r\n\r\n")
        got = +""
        got << sock.readpartial(65_536) while got.bytesize < 256 * 1024 && sock.wait_readable(10)
        assert_match(%r{\AHTTP/1\.1 200 }, got)
        reset!(sock)
        counts[kind] += 1
      end
    end
    counts
  end
end
