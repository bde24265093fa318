#!/usr/bin/env ruby
# frozen_string_literal: true

# Catamount against Puma on the same apps and settings, alternating A/B in one run, printed as
# Markdown tables of medians, spreads and ratios. `make bench` (full), `make bench-quick`.
#
#   ruby bench/run.rb [--quick | --smoke] [--rounds N] [--seconds S] [--only REGEX]
#                     [--servers catamount,puma] [--no-slow] [--json FILE] [--markdown FILE]
#                     [--mode shared|taskset|setsid]
#
# --only matches "app:mode" keys (hello:t5, rails:w2, ...), "slow" for the slow-client runs and
# "anatomy" for the per-request counts (objects, system calls, context switches).
# --smoke runs Catamount only, one short round each: the test suite uses it to check the runner.
# --mode places the servers and the load (bench/lib/placement.rb). The PostgreSQL apps' scenarios
# start the bench's own PostgreSQL for the run (bench/lib/postgres.rb).
require "optparse"
require "json"
require "fileutils"
require "tmpdir"
require "etc"
require_relative "lib/wrk"
require_relative "lib/memory"
require_relative "lib/servers"
require_relative "lib/scenarios"
require_relative "lib/report"
require_relative "lib/verdicts"
require_relative "lib/anatomy"
require_relative "lib/placement"
require_relative "lib/postgres"

module Bench
  Settings = Struct.new(:rounds, :seconds, :c1_seconds, :warmup, :servers, :only, :slow, :json, :markdown,
                        :profile, :mode, keyword_init: true)

  PROFILES = {
    "full" => { rounds: 3, seconds: 8, c1_seconds: 4, warmup: 2 },
    "quick" => { rounds: 2, seconds: 2, c1_seconds: 1, warmup: 1 },
    "smoke" => { rounds: 1, seconds: 1, c1_seconds: 1, warmup: 0 }
  }.freeze

  # Runs the plan and collects every sample.
  class Runner
    def initialize(settings)
      @settings = settings
      @kinds = settings.servers.map { |k| { "catamount" => CatamountKind, "puma" => PumaKind }.fetch(k).new }
      @log_dir = Dir.mktmpdir("catamount-bench")
      @certificate = Certificate.write(@log_dir)
    end

    def run
      results = header
      @postgres = start_postgres if plan.any? { |app, _| app.postgres }
      results[:postgres] = @postgres.is_a?(String) ? { skipped: @postgres } : { started: true } if @postgres
      results[:scenarios] = plan.map { |app, mode| run_scenario(app, mode) }
      results[:slow_clients] = run_slow_clients if @settings.slow && selected?("slow")
      results[:anatomy] = run_anatomy if selected?("anatomy")
      results
    ensure
      @postgres.stop if @postgres.respond_to?(:stop)
      FileUtils.rm_rf(@log_dir) unless $!
    end

    private

    def header
      {
        date: Time.now.utc.strftime("%Y-%m-%d %H:%M UTC"),
        commit: `git -C #{ROOT} rev-parse --short HEAD 2>/dev/null`.strip + (`git -C #{ROOT} status --porcelain 2>/dev/null`.empty? ? "" : " (dirty)"),
        machine: machine,
        command: "ruby bench/run.rb #{ARGV.join(' ')}".strip,
        profile: @settings.profile,
        mode: @settings.mode,
        mode_description: Placement.description,
        rounds: @settings.rounds,
        seconds: @settings.seconds
      }
    end

    def machine
      cpu = File.read("/proc/cpuinfo")[/^model name\s*:\s*(.+)$/, 1]
      mem = File.read("/proc/meminfo")[/^MemTotal:\s+(\d+)/, 1].to_i / (1024 * 1024)
      "#{Etc.nprocessors} CPUs (#{cpu}), #{mem} GiB, #{`uname -sr`.strip}, #{RUBY_DESCRIPTION}"
    end

    # The bench's PostgreSQL, or why it could not start (its scenarios then print that instead).
    def start_postgres
      progress "postgres"
      pg = Postgres.start
      progress(pg.is_a?(String) ? "  #{pg}" : "  started in #{pg.dir}")
      pg
    end

    def selected?(key)
      @settings.only.nil? || key.match?(@settings.only)
    end

    def plan
      APPS.product(MODES).select { |app, mode| app.runs_in?(mode) && selected?("#{app.key}:#{mode.key}") }
    end

    def run_scenario(app, mode)
      entry = { app: app.key, title: app.title, mode: mode.key, mode_title: mode.title,
                target: Bench.target(app.key, mode.key), servers: {} }
      return entry.merge(skipped: @postgres) if app.postgres && @postgres.is_a?(String)

      env = app.postgres ? @postgres.env : {}
      kinds = @kinds.dup
      limit_args = Bench.limit_args(app.key, mode.key)
      kinds << LimitKind.new(limit_args) if limit_args
      catamount = kinds.index { |k| k.key == "catamount" }
      kinds.insert(catamount + 1, CatamountMetricsKind.new) if catamount && Bench.metrics_row?(app.key, mode.key)
      kinds.insert(catamount + 1, CatamountPlainKind.new) if catamount && PLAIN_TWIN_APPS.include?(app.key)
      kinds.insert(catamount + 1, CatamountFiberKind.new(@log_dir)) if catamount && Bench.fiber_row?(app.key, mode.key)
      entry[:app_alone] = measure_app_alone(app) if APP_ALONE.include?(app.key) && mode.key == "t5"
      runnable = kinds.reject do |kind|
        why = kind.unsupported(mode)
        entry[:servers][kind.key] = { unsupported: why } if why
        why
      end
      progress "#{app.key} #{mode.title}"
      servers = []
      certificate = @certificate if app.tls
      runnable.each do |kind|
        servers << RunningServer.new(kind, mode, app.rackup_path, app.path, @log_dir, certificate: certificate, env: env).wait_ready
      end
      samples = measure(servers, app, mode)
      servers.each do |s|
        stats = Report.summarize(samples[s.kind.key]).merge(Memory.of_tree(s.pid))
        entry[:servers][s.kind.key] = { stats: stats, samples: samples[s.kind.key].transform_values { |v| v.map(&:to_h) } }
        next unless s.scrapes

        entry[:servers][s.kind.key][:scrapes] = s.scrapes
        progress format("  %s: /metrics scraped %d times, %d failed", s.kind.label, s.scrapes[:ok], s.scrapes[:failed])
      end
      entry
    ensure
      servers&.each(&:stop)
    end

    # Alternates the servers (A/B, then B/A) so drift on a shared machine hits both alike.
    def measure(servers, app, mode)
      samples = servers.to_h { |s| [s.kind.key, { c50: [], c1: [] }] }
      # The PostgreSQL apps open their connections on first use, a fiber-mode server up to 100
      # (about 7 ms each): warmed up even in a smoke run, or its one second may be all connects.
      warmup = app.postgres ? [@settings.warmup, 1].max : @settings.warmup
      servers.each { |s| wrk(s, app, app.load_connections, warmup) } if warmup.positive?
      @settings.rounds.times do |round|
        order = round.even? ? servers : servers.reverse
        order.each do |s|
          result = wrk(s, app, app.load_connections, @settings.seconds)
          samples[s.kind.key][:c50] << result
          progress format("  round %d %-21s %10.0f req/s  p99 %8.2f ms  errors %d", round + 1, s.kind.label, result.rps,
                          result.p99_ms || 0, result.errors + result.non_2xx)
        end
        order.each do |s|
          # Past -c50 a thread-bound server still owes the requests wrk left queued: answered
          # first (the probe waits its turn), so the single connection's latency is its own.
          s.wait_ready(timeout: 30) if app.load_connections > 50
          samples[s.kind.key][:c1] << wrk(s, app, 1, @settings.c1_seconds)
        end
        side_by_side(servers, app, mode, samples, round)
      end
      samples
    end

    # Catamount with metrics on and off (or in its fiber and thread modes) loaded at the same
    # time (`wrk -t2 -c25` each), so what else the machine runs meanwhile hits both alike: their
    # ratio is steadier than the alternating runs'. Kept as `side` (`side_fiber`) samples.
    def side_by_side(servers, app, mode, samples, round)
      twins = {} # the twin's key => the samples' key (the plain server has one list per twin)
      twins["catamount_metrics"] = :side if Bench.metrics_row?(app.key, mode.key)
      twins["catamount_fiber"] = :side_fiber if Bench.fiber_share_row?(app.key, mode.key)
      plain = servers.find { |s| s.kind.key == "catamount" }
      twins.each do |key, kind|
        pair = [plain, servers.find { |s| s.kind.key == key }]
        next unless pair.all?

        results = pair.map { |s| Thread.new { wrk(s, app, 25, @settings.seconds) } }.map(&:value)
        pair.zip(results) { |s, result| (samples[s.kind.key][kind] ||= []) << result }
        progress format("  round %d side by side: %s %10.0f req/s, %s %10.0f req/s", round + 1,
                        *pair.zip(results).flat_map { |s, result| [s.kind.label, result.rps] })
      end
    end

    # One wrk run against a server (its metrics scraped meanwhile when it has them on).
    def wrk(server, app, connections, seconds)
      server.under_load do
        Wrk.run(server.url(app.path), connections: connections, seconds: seconds, script: app.script, headers: app.headers)
      end
    end

    # The app's ceiling: its rate called in a loop with no server, in 1 process and in as many
    # as the cluster mode has workers (median over the rounds each), on the bench's PostgreSQL
    # for the apps that use it.
    def measure_app_alone(app)
      progress "#{app.key} alone"
      MODES.filter_map(&:workers).uniq.prepend(1).to_h do |processes|
        rates = Array.new(@settings.rounds) { app_alone_rate(app, processes) }
        progress format("  %d process%s %10.0f req/s", processes, processes == 1 ? "" : "es", Report.median(rates))
        [processes, { rps: Report.median(rates), samples: rates }]
      end
    end

    def app_alone_rate(app, processes)
      log = File.join(@log_dir, "alone-#{app.key}-#{processes}.log")
      env = { "RACK_ENV" => "production", **(app.postgres ? @postgres.env : {}) }
      out = IO.popen(env, Placement.server([RbConfig.ruby, APP_ALONE_SCRIPT, app.rackup_path, app.path, processes.to_s,
                                            @settings.seconds.to_s, @settings.warmup.to_s, Bench.app_alone_threads(app.key).to_s]),
                     chdir: File.dirname(app.rackup_path), err: log, &:read)
      raise "#{app.key} alone failed; log #{log}:\n#{File.read(log)[-2000..]}" unless $?.success?

      JSON.parse(out).fetch("rps")
    end

    def run_slow_clients
      mode = MODES.first
      app = SLOW_CLIENTS_APP
      progress "slow clients #{mode.title}"
      servers = @kinds.map { |kind| RunningServer.new(kind, mode, app.rackup_path, app.path, @log_dir).wait_ready }
      samples = servers.to_h { |s| [s.kind.key, { alone: [], readers: [], loris: [], readers_1000: [], loris_1000: [] }] }
      memory = servers.to_h { |s| [s.kind.key, Hash.new { |h, k| h[k] = [] }] }
      @settings.rounds.times do |round|
        (round.even? ? servers : servers.reverse).each do |s|
          samples[s.kind.key][:alone] << load(s)
          SLOW_RUNS.each do |key, tool, conns, *args|
            samples[s.kind.key][key] << beside(s, tool, conns, *args) do |kib_per_conn|
              memory[s.kind.key][key] << kib_per_conn
              load(s)
            end
          end
          progress format("  round %d %-10s alone %8.0f  slow readers %8.0f  slowloris %8.0f  1,000 slow readers %8.0f  " \
                          "1,000 slowloris %8.0f req/s", round + 1, s.kind.label, *samples[s.kind.key].values.map { |v| v.last.rps })
        end
      end
      { servers: servers.to_h do |s|
        st = samples[s.kind.key].transform_values { |v| { rps: Report.median(v.map(&:rps)), p99_ms: Report.median(v.map(&:p99_ms)) } }
        memory[s.kind.key].each { |key, kib| st[key][:rss_kib_per_conn] = Report.median(kib) }
        [s.kind.key, { stats: st, samples: samples[s.kind.key].transform_values { |v| v.map(&:to_h) } }]
      end }
    ensure
      servers&.each(&:stop)
    end

    # Objects, system calls and context switches per request, for each server in turn.
    def run_anatomy
      mode = MODES.find { |m| m.key == "t1" }
      progress "cost per request #{mode.title}"
      @kinds.to_h do |kind|
        server = RunningServer.new(kind, mode, PROBE_APP.rackup_path, PROBE_APP.path, @log_dir).wait_ready
        Wrk.run(server.url("/"), connections: 1, seconds: 1)
        [kind.key, Anatomy.measure(server, @settings.c1_seconds)]
      ensure
        server&.stop
      end
    end

    def load(server)
      Wrk.run(server.url("/"), connections: 50, seconds: @settings.seconds)
    end

    # The slow clients beside the load: key, tool, connections, the tool's arguments. The 1,000
    # readers ask for a 48 KiB page: 1,000 of the 4 MiB downloads would be 4 GiB waiting for
    # readers, past any server's memory bound (Catamount's 64 MiB for bytes handed over, past
    # which each further slow reader holds a thread at its pace, as every Puma thread does).
    SLOW_RUNS = [
      [:readers, "slowread", 50, "--path", "/download", "--rate", "10240"],
      [:loris, "slowloris", 50, "--interval-ms", "1000"],
      [:readers_1000, "slowread", 1000, "--path", "/page", "--rate", "10240"],
      [:loris_1000, "slowloris", 1000, "--interval-ms", "1000"]
    ].freeze

    # Runs the block while `conns` slow clients of `tool` hold connections to the server; gives
    # it the server's RSS growth (KiB) from before they came to once they settled, per connection.
    SETTLE_SECONDS = 1.5

    def beside(server, tool, conns, *args)
      duration = (@settings.seconds + SETTLE_SECONDS * (conns / 50.0).clamp(1, 3) + 3).ceil
      out = File.join(@log_dir, "#{tool}-#{server.port}.json")
      before = Memory.of_tree(server.pid)[:rss_kib]
      pid = Process.spawn(*Placement.client([TOOLS, tool, "--port", server.port.to_s, "--conns", conns.to_s,
                                             "--duration", duration.to_s, *args]), out: out, err: out)
      # The slow clients connect and take what they can before the load starts (1,000 take longer).
      sleep SETTLE_SECONDS * (conns / 50.0).clamp(1, 3)
      yield (Memory.of_tree(server.pid)[:rss_kib] - before).to_f / conns
    ensure
      if pid
        Process.kill("KILL", pid)
        Process.wait(pid)
      end
    end

    def progress(line)
      warn line
    end
  end

  def self.parse_settings(argv)
    profile = "full"
    overrides = {}
    servers = %w[catamount puma]
    settings = { only: nil, slow: true, json: nil, markdown: nil, mode: "shared" }
    OptionParser.new do |o|
      o.banner = "usage: ruby bench/run.rb [options]"
      o.on("--quick", "a few seconds a scenario (development)") { profile = "quick" }
      o.on("--smoke", "Catamount only, one short round (the test suite's check of the runner)") do
        profile = "smoke"
        servers = %w[catamount]
      end
      o.on("--rounds N", Integer) { |v| overrides[:rounds] = v }
      o.on("--seconds S", Integer) { |v| overrides[:seconds] = v }
      o.on("--only REGEX", Regexp) { |v| settings[:only] = v }
      o.on("--servers LIST", Array) { |v| servers = v }
      o.on("--no-slow", "skip the slow-client scenarios") { settings[:slow] = false }
      o.on("--json FILE", "write every sample as JSON") { |v| settings[:json] = v }
      o.on("--markdown FILE", "write the tables to FILE too") { |v| settings[:markdown] = v }
      o.on("--mode MODE", Placement::MODES.keys, "where the servers and wrk run: #{Placement::MODES.keys.join(', ')}") do |v|
        settings[:mode] = v
      end
    end.parse!(argv)
    Settings.new(**PROFILES.fetch(profile), **overrides, **settings, servers: servers, profile: profile)
  end
end

if $PROGRAM_NAME == __FILE__
  settings = Bench.parse_settings(ARGV.dup)
  Bench::Placement.mode = settings.mode
  results = Bench::Runner.new(settings).run
  table = Bench::Report.markdown(results)
  results[:verdicts] = Bench::Verdicts.all(results).map(&:to_h)
  head = "Catamount benchmark, #{results[:date]}, commit #{results[:commit]}\n#{results[:machine]}\n`#{results[:command]}`\n" \
         "Mode: #{results[:mode]} (#{results[:mode_description]})\n\n"
  puts head + table
  File.write(settings.markdown, head + table) if settings.markdown
  File.write(settings.json, JSON.pretty_generate(results)) if settings.json
end
