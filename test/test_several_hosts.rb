# frozen_string_literal: true

require "helper"
require "haproxy"
require "netns"
require "steady_load"

# Several hosts behind a load balancer (docs/deployment.md, "Several hosts"): three Catamount
# clusters, each in its own network namespace as a machine of its own, behind Debian's HAProxy
# on this machine with active health checks on each host's data-only control server. A rolling
# phased restart of all three under steady load fails no request; a host whose processes all
# die at once (SIGKILL) is taken out of rotation by the health check, and the requests that
# failed are counted and no more than the ones in flight on it.
class TestSeveralHosts < Minitest::Test
  include Support::ServerTest
  include Support::Haproxy
  include Support::Netns
  parallelize_me!

  APP_PORT = 9292     # each host has its own addresses, so every one uses the same ports
  CONTROL_PORT = 9293

  # The backend docs/deployment.md gives: round robin, a request that found no connection or no
  # answer retried (idempotent ones only) on another server, checks every 200 ms that a worker
  # is booted, two failed checks take a server out and two good ones bring it back.
  BACKEND = [
    "balance roundrobin",
    'http-check expect rstring "\\"booted_workers\\":[1-9]"',
    "retry-on conn-failure empty-response",
    "http-request disable-l7-retry unless METH_GET",
    "retries 3",
    "option redispatch 1"
  ].freeze

  def test_rolling_phased_restart_of_three_hosts_fails_nothing
    three_hosts do |hosts, port|
      load = SteadyLoad.new(port, keep_alive: 4, fresh: 1, max_seconds: 240)
      assert load.wait_for_bodies { |b| hosts_answering(b, "v1").size == 3 }, load.summary
      hosts.each_with_index do |host, i|
        # New code on this host only, then its phased restart; the next host waits until this
        # one's workers all run the new code.
        File.write("#{host.dir}/app.ru", host_app("v2", host))
        host.server.signal("USR1")
        assert wait_until(timeout: 120) { host.server.stdout.include?("Phased restart complete") },
               "#{host.name}: #{host.server.stdout}"
        assert load.wait_for_bodies { |b| hosts_answering(b, "v2").include?("h#{i}") }, load.summary
      end
      assert load.wait_for_more(50), load.summary
      settled = load.bodies
      assert load.wait_for_more(300), load.summary
      load.stop
      # Every answer since the last restart completed came from the new code, on every host.
      grown = load.bodies.select { |body, n| n > settled.fetch(body, 0) }.keys
      assert_equal ["v2"], grown.map { |b| b.split.first }.uniq, "#{load.summary}\n#{grown.inspect}"
      assert_equal 3, hosts_answering(grown.to_h { |b| [b, 1] }, "v2").size, grown.inspect
      counts = haproxy_counts(port, hosts)
      puts "\nrolling phased restart of 3 hosts behind HAProxy: #{load.ok} answered, #{load.failures.size} failed; " \
           "HAProxy #{counts}"
      problems = haproxy_log_problems(dir_of(hosts))
      assert_empty load.failures, "#{load.summary}\nHAProxy's log:\n#{problems.join}"
      backend = haproxy_server_stats(port, "BACKEND")
      assert_equal [0, 0, 0], backend.values_at("hrsp_5xx", "econ", "eresp").map(&:to_i),
                   "HAProxy #{counts}\n#{problems.join}"
      hosts.each_index { |i| assert_equal "UP", haproxy_server_stats(port, "h#{i}")["status"] }
    end
  end

  def test_a_killed_host_is_taken_out_and_costs_at_most_its_requests_in_flight
    three_hosts do |hosts, port|
      gets = SteadyLoad.new(port, keep_alive: 3, fresh: 1, max_seconds: 120)
      posts = SteadyLoad.new(port, path: "/sleep", keep_alive: 3, fresh: 0, method: "POST", max_seconds: 120)
      assert gets.wait_for_bodies { |b| hosts_answering(b, "v1").size == 3 }, gets.summary
      assert posts.wait_for_more(3), posts.summary
      victim = hosts[1]
      # A POST is running on the victim, so the kill catches at least one request mid-way.
      assert wait_until(timeout: 30) { in_flight(victim).any? { |r| r.start_with?("POST") } }, posts.summary
      killed = kill_host(victim)
      lost = in_flight(victim) # started there and never answered: the processes are gone
      assert wait_until(timeout: 15) { haproxy_server_stats(port, "h1")["status"].start_with?("DOWN") },
             haproxy_server_stats(port, "h1").inspect
      down = gets.bodies
      assert gets.wait_for_more(300), gets.summary
      assert posts.wait_for_more(6), posts.summary
      gets.stop
      posts.stop
      # Only the other two answer once the check took the victim out.
      grown = gets.bodies.select { |body, n| n > down.fetch(body, 0) }
      assert_equal %w[h0 h2], hosts_answering(grown, "v1").sort, grown.inspect
      failures = gets.failures + posts.failures
      counts = haproxy_counts(port, hosts)
      puts "\nhost h1 killed (#{killed.size} processes) under load behind HAProxy: #{lost.size} requests in flight on it " \
           "(#{lost.tally.map { |r, n| "#{n} #{r}" }.join(', ')}); clients saw #{failures.size} fail " \
           "(GET #{gets.failures.size} of #{gets.ok + gets.failures.size}, POST #{posts.failures.size} of " \
           "#{posts.ok + posts.failures.size}: #{failures.map(&:error).tally}); HAProxy #{counts}"
      assert_operator failures.size, :<=, lost.size,
                      "more requests failed than were in flight on the killed host: #{gets.summary}; #{posts.summary}"
      # HAProxy replayed the GETs (retry-on), never a POST (disable-l7-retry): a POST cut
      # short on the dead host reached the client as an error.
      assert_empty gets.failures, gets.summary
      [0, 2].each { |i| assert_equal "UP", haproxy_server_stats(port, "h#{i}")["status"] }
    end
  end

  private

  # Three namespaces, each running a two-worker preloaded cluster with a data-only control
  # server, and HAProxy in front once it sees all three up. Yields the hosts and HAProxy's port.
  # Whatever runs in a namespace is killed with it after the test (Support::Netns).
  def three_hosts
    Dir.mktmpdir do |dir|
      hosts = netns_hosts(3)
      hosts.each_with_index do |host, i|
        host.dir = File.join(dir, "h#{i}")
        FileUtils.mkdir_p("#{host.dir}/inflight")
        File.write("#{host.dir}/app.ru", host_app("v1", host))
        File.write("#{host.dir}/puma.rb", <<~RUBY)
          workers 2
          preload_app!
          bind "tcp://#{host.address}:#{APP_PORT}"
          activate_control_app "tcp://#{host.address}:#{CONTROL_PORT}", data_only: true, no_token: true
        RUBY
      end
      hosts.each { |host| launch_in(host, ["-C", "puma.rb", "app.ru"], chdir: host.dir) }
      hosts.each do |host|
        host.server.boot!(timeout: 60)
        host.server.wait_for(/Worker 0 \(PID: \d+\) booted.*Worker 1 \(PID: \d+\) booted|Worker 1 \(PID: \d+\) booted.*Worker 0 \(PID: \d+\) booted/m,
                             timeout: 60)
      end
      servers = hosts.each_with_index.map do |host, i|
        "h#{i} #{host.address}:#{APP_PORT} check port #{CONTROL_PORT} inter 200ms fall 2 rise 2"
      end
      port = start_haproxy(dir, servers, backend: BACKEND, check: "GET /stats")
      hosts.each_index { |i| wait_for_haproxy_up(port, server: "h#{i}") }
      yield hosts, port
    end
  end

  # Answers "<version> <host> <pid>". Every request leaves a file in the host's inflight/
  # (naming it) from when the app takes it until its response is written (the body's `close`),
  # so what a killed host left there is what it had in flight.
  def host_app(version, host)
    <<~RUBY
      inflight = #{"#{host.dir}/inflight".inspect}
      body = Struct.new(:text, :mark) do
        def each
          yield text
        end

        def close
          File.delete(mark)
        end
      end
      run lambda { |env|
        mark = File.join(inflight, "\#{Process.pid}-\#{Thread.current.object_id}")
        File.write(mark, "\#{env['REQUEST_METHOD']} \#{env['PATH_INFO']}")
        env["rack.input"].read
        sleep 0.5 if env["PATH_INFO"] == "/sleep"
        text = "#{version} #{File.basename(host.dir)} \#{Process.pid}"
        [200, { "content-type" => "text/plain", "content-length" => text.bytesize.to_s }, body.new(text, mark)]
      }
    RUBY
  end

  # The requests (method and path) in flight on `host` now.
  def in_flight(host)
    Dir.glob("#{host.dir}/inflight/*").filter_map do |f|
      File.read(f)
    rescue Errno::ENOENT
      nil
    end
  end

  # The hosts ("h0"...) whose answers with `version` are among the bodies.
  def hosts_answering(bodies, version)
    bodies.keys.filter_map { |b| b.split[1] if b.start_with?("#{version} ") }.uniq
  end

  def dir_of(hosts)
    File.dirname(hosts.first.dir)
  end

  # HAProxy's counters, per server and for the backend, for the message.
  def haproxy_counts(port, hosts)
    names = hosts.each_index.map { |i| "h#{i}" } << "BACKEND"
    names.map do |name|
      row = haproxy_server_stats(port, name)
      "#{name} #{row['status']}: " + %w[hrsp_2xx hrsp_5xx econ eresp wretr wredis].map { |k| "#{k} #{row[k].to_i}" }.join(" ")
    end.join("; ")
  end
end
