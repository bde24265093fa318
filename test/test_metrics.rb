# frozen_string_literal: true

require_relative "support/helper"
require "open3"

# The Prometheus endpoint, read by a real exposition-format parser (Python's prometheus-client,
# installed by script/bootstrap into a venv), its counters checked against the requests the test
# made: on a listener of its own (`metrics_url`), on the control server (`control_metrics`), in
# single and cluster mode.
class TestMetrics < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  PYTHON = File.join(Dir.home, ".cache", "catamount", "venv", "bin", "python")
  # Prints every sample as JSON lines: [name, labels, value].
  PARSE = <<~PY
    import json, sys
    from prometheus_client.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(sys.stdin.read()):
        for s in family.samples:
            print(json.dumps([s.name, s.labels, s.value, family.type]))
  PY

  # The samples of the metrics text at `url` (+ `query`), parsed by prometheus-client:
  # { [name, labels] => value }.
  def scrape(url, query = "")
    answer = get_url("#{url}/metrics#{query}")
    assert_equal 200, answer.status, answer.body
    assert_match %r{\Atext/plain; version=0\.0\.4}, answer["content-type"]
    out, err, status = Open3.capture3(PYTHON, "-c", PARSE, stdin_data: answer.body)
    assert status.success?, "prometheus-client refused the text: #{err}\n#{answer.body}"
    out.lines.to_h do |line|
      name, labels, value, = JSON.parse(line)
      [[name, labels], value]
    end
  end

  def get_url(url)
    host, port = url[%r{//([^/]+)}, 1].split(":")
    raw_request(port.to_i, "GET #{url[%r{//[^/]+(.*)}, 1]} HTTP/1.0\r\nHost: #{host}\r\n\r\n")
  end

  def value(samples, name, labels = {})
    samples.fetch([name, labels.transform_keys(&:to_s)]) { flunk "no #{name}#{labels.inspect} in #{samples.keys.map(&:first).uniq.sort}" }
  end

  def sum(samples, name)
    samples.select { |(n, _), _| n == name }.sum { |_, v| v }
  end

  def metrics_url(server)
    server.stdout[%r{Serving metrics on (\S+)/metrics}, 1]
  end

  def test_single_mode_counts_match_the_requests_made
    server = start_server("-t", "2:2", "--metrics-url", "tcp://127.0.0.1:0")
    url = metrics_url(server)
    assert_match %r{\Ahttp://127\.0\.0\.1:\d+\z}, url
    sent = 0
    5.times do
      request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      sent += request.bytesize
      assert_equal 200, raw_request(server.port, request).status
    end
    2.times { assert_equal 404, get(server.port, "/status?code=404").status }
    assert_equal 500, get(server.port, "/boom").status
    assert_equal 400, raw_request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").status

    samples = scrape(url)
    assert_equal 8, value(samples, "catamount_requests_total"), "requests handed to the app"
    assert_equal 5, value(samples, "catamount_responses_total", status_class: "2xx")
    assert_equal 2 + 1, value(samples, "catamount_responses_total", status_class: "4xx"), "two from the app, one refused"
    assert_equal 1, value(samples, "catamount_responses_total", status_class: "5xx")
    assert_equal 8, value(samples, "catamount_request_duration_seconds_count")
    assert_equal 8, value(samples, "catamount_request_queue_time_seconds_count")
    assert_equal 8, value(samples, "catamount_request_duration_seconds_bucket", le: "+Inf")
    assert_operator value(samples, "catamount_received_bytes_total"), :>=, sent
    assert_operator value(samples, "catamount_sent_bytes_total"), :>, 0
    assert_equal 2, value(samples, "catamount_threads_max")
    assert_operator value(samples, "catamount_process_resident_memory_bytes"), :>, 1 << 20
    assert_operator value(samples, "catamount_connections_accepted_total"), :>=, 9
  end

  def test_metrics_listener_on_a_unix_socket
    Dir.mktmpdir do |dir|
      server = start_server("--metrics-url", "unix://#{dir}/metrics.sock")
      assert_equal "unix://#{dir}/metrics.sock", metrics_url(server)
      2.times { get(server.port, "/") }
      sock = UNIXSocket.new("#{dir}/metrics.sock")
      sock.write("GET /metrics HTTP/1.0\r\n\r\n")
      text = read_until_close(sock).split("\r\n\r\n", 2).last
      out, err, status = Open3.capture3(PYTHON, "-c", PARSE, stdin_data: text)
      assert status.success?, err
      samples = out.lines.map { |line| JSON.parse(line) }
      assert_equal 2, samples.find { |name, labels,| name == "catamount_requests_total" && labels.empty? }&.at(2)
    ensure
      sock&.close
    end
  end

  def test_on_the_control_server_under_its_token
    server = start_server("--control-url", "tcp://127.0.0.1:0", "--control-token", "tok",
                          "-C", config_file("control_metrics\n"), "-b", "tcp://127.0.0.1:0")
    url = server.stdout[/Starting control server on (\S+)/, 1]
    assert_equal 403, get_url("#{url}/metrics").status
    3.times { get(server.port, "/") }
    assert_equal 3, value(scrape(url, "?token=tok"), "catamount_requests_total")
  end

  def test_without_control_metrics_the_control_server_has_no_metrics
    server = start_server("--control-url", "tcp://127.0.0.1:0", "--control-token", "none")
    url = server.stdout[/Starting control server on (\S+)/, 1]
    assert_equal 404, get_url("#{url}/metrics").status
  end

  def test_cluster_metrics_add_up_the_workers_check_ins
    server = start_server("-w", "2", "-t", "1:1", "--metrics-url", "tcp://127.0.0.1:0",
                          "-C", config_file("worker_check_interval 1\n"), "-b", "tcp://127.0.0.1:0")
    url = metrics_url(server)
    server.wait_for(/Worker 1 \(PID: \d+\) booted/)
    20.times { assert_equal 200, get(server.port, "/").status }
    samples = nil
    assert wait_until(timeout: 20) { sum(samples = scrape(url), "catamount_requests_total") == 20 }, samples.inspect
    assert_equal 20, sum(samples, "catamount_responses_total")
    assert_equal 2, value(samples, "catamount_workers")
    assert_equal 2, value(samples, "catamount_workers_booted")
    assert_equal 0, value(samples, "catamount_phase")
    assert_equal 2, value(samples, "catamount_worker_boots_total")
    %w[0 1].each do |index|
      assert_operator value(samples, "catamount_process_resident_memory_bytes", worker: index), :>, 1 << 20
      assert_equal 1, value(samples, "catamount_threads_max", worker: index)
    end
    assert_operator value(samples, "catamount_process_resident_memory_bytes", role: "master"), :>, 1 << 20
  ensure
    kill_named_workers(server)
  end

  def test_plugin_metrics_gives_puma_metrics_default_url
    Dir.mktmpdir do |dir|
      conf = File.join(dir, "puma.rb")
      File.write(conf, "plugin :metrics\n$first = get(:metrics_url)\nmetrics_url 'tcp://127.0.0.1:0'\n")
      script = <<~RUBY
        require "catamount"
        config = Catamount::Configuration.load(Catamount::Native.parse_cli(["-C", ARGV[0]]))
        p [$first, config.options[:metrics_url]]
      RUBY
      out, err, status = Open3.capture3(RbConfig.ruby, "-I", File.join(Support::ROOT, "lib"), "-e", script, conf)
      assert status.success?, err
      assert_equal %(["tcp://0.0.0.0:9393", "tcp://127.0.0.1:0"]\n), out
    end
  end

  def config_file(text)
    dir = Dir.mktmpdir
    (@dirs ||= []) << dir
    File.write("#{dir}/puma.rb", text)
    "#{dir}/puma.rb"
  end

  def teardown
    super
    (@dirs || []).each { |d| FileUtils.rm_rf(d) }
  end
end
