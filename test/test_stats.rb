# frozen_string_literal: true

require_relative "support/helper"
require "open3"

# Stats (docs/stats.md): `Catamount.stats`, `Puma.stats` and `Puma.stats_hash` read in-process
# by the app (test/apps/stats.ru) in single mode, and by a master's plugin timer in a cluster;
# the env keys `catamount.queue_time` and `puma.request_body_wait`. Every count is checked
# against what the test itself sent.
class TestStats < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  # Contract A: the per-server keys, in order.
  SERVER_KEYS = %i[backlog running pool_capacity busy_threads io_threads backlog_max max_threads requests_count
                   reactor_max responses request_duration queue_time bytes_in bytes_out connections_open
                   connections_accepted request_timeouts threads_lost response_bytes_buffered
                   response_bytes_spilled].freeze
  BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0].freeze
  CLUSTER_KEYS = %i[started_at workers phase booted_workers old_workers worker_status versions worker_boots
                    worker_restarts].freeze
  WORKER_KEYS = %i[started_at pid index phase booted last_checkin last_status].freeze

  # A Puma plugin (so the `Puma` shim is there, as for any plugin user) that, with STATS_FILE
  # set, writes `Catamount.stats` as JSON to that file every 0.2 s from the process's timers
  # (in a cluster: the master's loop).
  PLUGIN = <<~RUBY
    require "json"
    Puma::Plugin.create do
      def start(launcher)
        path = ENV["STATS_FILE"]
        return unless path

        launcher.every(0.2) do
          File.write("\#{path}.tmp", JSON.generate(Catamount.stats))
          File.rename("\#{path}.tmp", path)
        end
      end
    end
  RUBY

  def with_plugin
    Dir.mktmpdir do |dir|
      FileUtils.mkdir_p("#{dir}/lib/puma/plugin")
      File.write("#{dir}/lib/puma/plugin/statsfile.rb", PLUGIN)
      yield dir
    end
  end

  # The server on stats.ru, with the plugin loaded by a config file (and `config` added to it).
  def serve(dir, *args, config: "", env: {})
    File.write("#{dir}/puma.rb", "plugin :statsfile\n#{config}")
    start_server("-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", "-I", "#{dir}/lib", *args, app: "stats.ru", env: env)
  end

  # Counts what the test sends and receives, so the server's counters can be held to it.
  def request(port, raw, sock: nil)
    @sent = @sent.to_i + raw.bytesize
    own = sock.nil?
    sock ||= connect(port)
    sock.write(raw)
    response = read_response(sock)
    @last_received = response.raw.bytesize + response.body.bytesize
    @received = @received.to_i + @last_received
    @made = @made.to_i + 1
    response
  ensure
    sock&.close if own
  end

  def get_path(port, path, sock: nil, close: true)
    request(port, "GET #{path} HTTP/1.1\r\nHost: x\r\n#{"Connection: close\r\n" if close}\r\n", sock: sock)
  end

  def stats(port, reset: false)
    JSON.parse(get_path(port, "/stats#{'?reset=1' if reset}").body, symbolize_names: true)
  end

  def assert_server_shape(s)
    assert_equal SERVER_KEYS, s.keys
    (SERVER_KEYS - %i[responses request_duration queue_time]).each { |k| assert_kind_of Integer, s[k], k }
    assert_equal %i[1xx 2xx 3xx 4xx 5xx], s[:responses].keys
    %i[request_duration queue_time].each do |h|
      assert_equal %i[bounds counts sum], s[h].keys
      assert_equal BOUNDS, s[h][:bounds]
      assert_equal 14, s[h][:counts].size
      assert s[h][:counts].each_cons(2).all? { |a, b| a <= b }, "#{h} counts are cumulative: #{s[h][:counts]}"
      assert_kind_of Float, s[h][:sum]
    end
    assert_equal 0, s[:io_threads]
  end

  # An app that reads `Puma.stats` runs on Catamount as on Puma, without any plugin or the
  # puma gem loaded.
  def test_puma_stats_without_a_plugin
    server = start_server("-t", "2:2", "--no-config", app: "stats.ru")
    got = JSON.parse(get_path(server.port, "/stats").body, symbolize_names: true)
    assert_equal 2, got[:puma][:max_threads]
    assert_equal got[:catamount].keys, got[:puma_hash].keys
  end

  def test_single_mode_counts_what_the_test_sent
    with_plugin do |dir|
      server = serve(dir, "-t", "3:3")
      port = server.port
      first = JSON.parse(get_path(port, "/stats").body, symbolize_names: true)
      s = first[:catamount]
      assert_equal [:started_at, *SERVER_KEYS, :versions], s.keys
      assert_equal({ catamount: Catamount::VERSION, ruby: { engine: RUBY_ENGINE, version: RUBY_VERSION, patchlevel: RUBY_PATCHLEVEL } },
                   s[:versions])
      assert_server_shape(s.reject { |k, _| %i[started_at versions].include?(k) })
      assert_equal first[:puma_hash].keys, s.keys, "Puma.stats_hash"
      assert_equal first[:puma].keys, s.keys, "Puma.stats"
      assert_equal 1, s[:requests_count]
      [first[:puma], first[:puma_hash]].each { |other| assert_equal 1, other[:requests_count] }

      assert_equal 200, get_path(port, "/").status
      assert_equal 404, get_path(port, "/status?code=404").status
      assert_equal 500, get_path(port, "/raise").status
      assert_equal 400, raw_request(port, "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").status
      # Responses larger than the sockets hold: read only once the pool thread handed the rest
      # to the reactor (bytes_out counts the pool thread's writes and the reactor's).
      size = 14_000_000
      File.binwrite("#{dir}/file", "f" * size)
      ["/big?size=#{size}", "/file?path=#{dir}/file"].each_with_index do |path, i|
        sock = connect(port)
        @sent = @sent.to_i + sock.write("GET #{path}&marker=#{dir}/sent-#{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert_equal "done", wait_for_file("#{dir}/sent-#{i}", timeout: 15), path
        assert_equal size, request(port, "", sock: sock).body.bytesize
        sock.close
      end
      body = "x" * 5000
      assert_equal 200, request(port, "POST /env HTTP/1.1\r\nHost: x\r\nContent-Length: #{body.bytesize}\r\n" \
                                      "Connection: close\r\n\r\n#{body}").status
      # Every request answered counts in the histograms before the next one is read: poll
      # until the last one's duration is in (its thread may still be finishing it).
      s = nil
      assert wait_until { (s = stats(port)[:catamount])[:request_duration][:counts].last == @made - 1 }, s.inspect
      assert_equal @made, s[:requests_count], "the 400 never reached the app"
      assert_equal @made, s[:queue_time][:counts].last
      # 2xx: the first stats, the poll's, /, the POST; the current one's head is not out yet.
      assert_equal({ "1xx": 0, "2xx": @made - 3, "3xx": 0, "4xx": 2, "5xx": 1 }, s[:responses])
      assert_operator s[:bytes_in], :>=, @sent
      assert_operator s[:bytes_out], :>=, @received - @last_received, "all but the response being made then"
      assert_operator s[:connections_accepted], :>=, @made + 1
      assert_operator s[:request_duration][:sum], :>=, 0.0
    end
  end

  # With N requests held, busy_threads counts them; requests queued behind them are the backlog,
  # and backlog_max keeps its high until a reset read.
  def test_busy_threads_backlog_and_backlog_max
    with_plugin do |dir|
      server = serve(dir, "-t", "2:2")
      port = server.port
      # Two keep-alive connections accepted before the pool is full: their next requests are
      # read at once and queue.
      idle = Array.new(2) { connect(port) }
      idle.each { |sock| assert_equal 200, get_path(port, "/", sock: sock, close: false).status }
      holders = %w[a b].map do |id|
        sock = connect(port)
        sock.write("GET /hold?dir=#{dir}&id=#{id}#{'&backlog=2' if id == 'a'} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock
      end
      assert wait_until { %w[a b].all? { |id| File.exist?("#{dir}/started-#{id}") } }, server.stderr
      queued = %w[c d].zip(idle).map do |id, sock|
        sock.write("GET /hold?dir=#{dir}&id=#{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock
      end
      FileUtils.touch("#{dir}/release-a")
      seen = JSON.parse(read_response(holders[0]).body, symbolize_names: true)
      assert_equal 2, seen[:backlog], seen.inspect
      assert_operator seen[:busy_threads], :>=, 2
      assert_operator seen[:busy_threads], :>=, 2 + seen[:backlog]
      assert_equal 0, seen[:pool_capacity]
      assert_operator seen[:backlog_max], :>=, 2
      assert_operator seen[:connections_open], :>=, 4
      %w[b c d].each { |id| FileUtils.touch("#{dir}/release-#{id}") }
      [holders[1], *queued].each { |sock| assert_equal 200, read_response(sock).status }
      (holders + queued).each(&:close)

      assert_operator stats(port, reset: true)[:catamount][:backlog_max], :>=, 2
      after = stats(port)[:catamount]
      assert_operator after[:backlog_max], :<=, 1, "restarted from the backlog at the reset (this request queued once)"
      assert_operator after[:reactor_max], :>=, 1
    end
  end

  def test_connections_open_counts_connections_held_open
    with_plugin do |dir|
      server = serve(dir)
      port = server.port
      held = Array.new(3) { connect(port) }
      held.each { |sock| assert_equal 200, get_path(port, "/", sock: sock, close: false).status }
      s = stats(port)[:catamount]
      assert_operator s[:connections_open], :>=, 4, "three held and this one"
      assert_operator s[:reactor_max], :>=, 4
      assert_operator s[:connections_accepted], :>=, 4
      held.each(&:close)
      assert wait_until { stats(port)[:catamount][:connections_open] == 1 }, "closed connections are uncounted"
    end
  end

  # `catamount.queue_time`: Float seconds >= 0 on every request. `puma.request_body_wait`: on
  # every request, as Puma sets it (milliseconds from the end of the head to the end of the body;
  # a Float, as Puma 6+; Puma 5.6 gave an Integer).
  def test_env_keys
    with_plugin do |dir|
      port = serve(dir).port
      [get_path(port, "/env"),
       request(port, "POST /env HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")].each do |r|
        env = JSON.parse(r.body)
        %w[catamount.queue_time puma.request_body_wait].each do |key|
          assert env[key]["present"], key
          assert_equal "Float", env[key]["class"], key
          assert_operator env[key]["value"], :>=, 0.0, key
        end
      end
    end
  end

  # Native::Server#stats answers the same keys before the server starts and after it stopped
  # (a cluster master's server is never started).
  def test_native_server_stats_before_start_and_after_stop
    script = <<~RUBY
      require "catamount"
      require "json"
      options = Catamount::Native.parse_cli(["-b", "tcp://127.0.0.1:0", "-t", "1:1", "--no-config"]).resolve([])
      settings = { rack_version: nil, http_version: false, script_name: "", server_software: "x", errors: $stderr,
                   null_input: Catamount::NullInput::INSTANCE, environment: "test", multiprocess: false,
                   lowlevel_error_handler: nil, access_logger: nil, out_of_band: nil, inherited: [] }
      server = Catamount::Native::Server.new(options, settings)
      before = server.stats
      server.start
      server.stop
      server.wait
      puts JSON.generate(before: before, after: server.stats(reset_max: true))
    RUBY
    out, err, status = Open3.capture3(RbConfig.ruby, "-w", "-I", File.join(Support::ROOT, "lib"), "-e", script)
    assert status.success?, err
    assert_empty err
    JSON.parse(out, symbolize_names: true).each_value do |s|
      assert_server_shape(s)
      assert_equal [0, 0, 1, 1], s.values_at(:requests_count, :running, :max_threads, :pool_capacity)
    end
  end

  # A worker's check-in carries contract A as JSON in one pipe write: it must stay well under
  # PIPE_BUF (4096) even with every counter at its largest.
  def test_a_check_in_stays_under_pipe_buf
    with_plugin do |dir|
      port = serve(dir).port
      s = stats(port)[:catamount].reject { |k, _| %i[started_at versions].include?(k) }
      huge = lambda do |v|
        case v
        when Hash then v.transform_values { |x| huge.call(x) }
        when Array then v.map { |x| huge.call(x) }
        when Integer then 2**64 - 1
        when Float then v.zero? ? 1.2345678901234567e+300 : v
        else v
        end
      end
      line = "p#{2**22}#{JSON.generate(huge.call(s))}\n"
      assert_operator line.bytesize, :<, 2048, line
    end
  end

  def test_cluster_stats_in_puma_8s_shape
    with_plugin do |dir|
      file = "#{dir}/stats.json"
      server = serve(dir, "-t", "2:2", config: "workers 2\nworker_check_interval 1\n", env: { "STATS_FILE" => file })
      2.times { |i| server.wait_for(/Worker #{i} \(PID: \d+\) booted/) }
      made = 6
      made.times { assert_equal 200, get(server.port, "/").status }
      s = nil
      summed = lambda do
        s = JSON.parse(File.read(file), symbolize_names: true) if File.exist?(file)
        s && s[:worker_status].size == 2 && s[:worker_status].sum { |w| w[:last_status][:requests_count].to_i } >= made
      end
      assert wait_until(timeout: 15, &summed), s.inspect
      assert_equal CLUSTER_KEYS, s.keys
      assert_equal [2, 0, 2, 0], s.values_at(:workers, :phase, :booted_workers, :old_workers)
      assert_equal 2, s[:worker_boots]
      assert_equal 0, s[:worker_restarts]
      assert_equal Catamount::VERSION, s[:versions][:catamount]
      assert_equal [0, 1], s[:worker_status].map { |w| w[:index] }
      s[:worker_status].each do |w|
        assert_equal WORKER_KEYS, w.keys
        assert w[:booted]
        assert_server_shape(w[:last_status])
        assert_equal 2, w[:last_status][:max_threads]
      end
      # A killed worker is replaced: a restart and a boot.
      Process.kill("KILL", s[:worker_status][1][:pid])
      assert wait_until(timeout: 15) {
        s = JSON.parse(File.read(file), symbolize_names: true)
        s[:worker_restarts] == 1 && s[:worker_boots] == 3
      }, s.inspect
    ensure
      kill_named_workers(server)
    end
  end
end
