# frozen_string_literal: true

module Bench
  APPS_DIR = File.expand_path("../apps", __dir__)

  # An app under load: its rackup, the path wrk requests, an optional wrk script; `tls` serves it
  # over TLS (both servers, the same certificate), `headers` are added to every request, and
  # `modes` (nil: all) limits the modes it runs in. `connections` is wrk's for the throughput runs
  # (nil: 50); `postgres` apps need the bench's PostgreSQL (bench/lib/postgres.rb).
  App = Struct.new(:key, :title, :rackup, :path, :script, :tls, :headers, :modes, :connections, :postgres,
                   keyword_init: true) do
    def rackup_path
      File.join(APPS_DIR, rackup)
    end

    def load_connections
      connections || 50
    end

    def runs_in?(mode)
      modes.nil? || modes.include?(mode.key)
    end
  end

  # Threads and workers, the same for both servers.
  Mode = Struct.new(:key, :title, :min, :max, :workers, keyword_init: true)

  APPS = [
    App.new(key: "hello", title: "hello world", rackup: "hello.ru", path: "/"),
    App.new(key: "body_1mib", title: "1 MiB body", rackup: "body_1mib.ru", path: "/"),
    App.new(key: "file_10mib", title: "10 MiB to_path file", rackup: "file_10mib.ru", path: "/"),
    App.new(key: "post_echo", title: "100 KiB POST echo", rackup: "post_echo.ru", path: "/", script: "post_100k.lua"),
    App.new(key: "sleep", title: "IO-bound (20 ms sleep)", rackup: "sleep.ru", path: "/"),
    App.new(key: "cpu", title: "CPU-bound (~2 ms Ruby)", rackup: "cpu.ru", path: "/"),
    App.new(key: "sinatra", title: "Sinatra route + ERB", rackup: "sinatra/config.ru", path: "/hello/bench?n=10"),
    App.new(key: "rails", title: "Rails 6.1 action + view", rackup: "rails/config.ru", path: "/items/42"),
    App.new(key: "hello_tls", title: "hello world over TLS", rackup: "hello.ru", path: "/", tls: true, modes: %w[t5 w2]),
    App.new(key: "body_1mib_tls", title: "1 MiB body over TLS", rackup: "body_1mib.ru", path: "/", tls: true,
            modes: %w[t5]),
    App.new(key: "connect_tls", title: "hello world, a new TLS connection per request", rackup: "hello.ru", path: "/",
            tls: true, headers: ["Connection: close"], modes: %w[t5]),
    # IO-bound with more connections than threads (issue 25): the waits, not the server, set the
    # rate of a thread-per-request server; 200 connections leave room for a fiber mode to show.
    App.new(key: "sleep_c200", title: "20 ms sleep, `-c200`", rackup: "sleep.ru", path: "/", connections: 200,
            modes: %w[t5 w2]),
    App.new(key: "pg_sleep", title: "PostgreSQL `pg_sleep(0.02)`, `-c200`", rackup: "pg_sleep.ru", path: "/",
            connections: 200, postgres: true, modes: %w[t5 w2]),
    App.new(key: "pg_lookup", title: "PostgreSQL indexed lookup as JSON, `-c200`", rackup: "pg_lookup.ru", path: "/",
            connections: 200, postgres: true, modes: %w[t5 w2])
  ].freeze

  MODES = [
    Mode.new(key: "t5", title: "-t 5:5", min: 5, max: 5),
    Mode.new(key: "t1", title: "-t 1:1", min: 1, max: 1),
    Mode.new(key: "w2", title: "-w 2 -t 5:5", min: 5, max: 5, workers: 2)
  ].freeze

  PROBE_APP = App.new(key: "probe", title: "hello world with an allocation probe", rackup: "probe.ru", path: "/")
  SLOW_CLIENTS_APP = App.new(key: "slow_clients", title: "hello world beside slow clients", rackup: "slow_clients.ru", path: "/")

  # The Catamount/Puma ratio each scenario must reach, where its target is a ratio (issue 25's
  # restated targets; docs/benchmarks.md "What is measured" says where each comes from). The
  # others are judged by their share of a limit or of the app alone (`share_target`).
  def self.target(app_key, mode_key)
    case app_key
    when "hello" then mode_key == "w2" ? 2.5 : nil
    when "cpu" then 0.97
    when "hello_tls" then 3.0
    # Issue 25's: the lookup at 2x Puma at `-t 5:5`. The 20 ms waits' 10x is the fiber mode's;
    # in thread mode both servers wait out the same 20 ms per thread.
    when "pg_lookup" then mode_key == "t5" ? 2.0 : nil
    end
  end

  # The share of a ceiling Catamount must reach: [:limit, share] of the pure-Rust limit server
  # (the two-thread one beside the cluster's hello world), [:alone, share] of the app alone (in
  # as many processes as the mode has), or nil (no share target).
  def self.share_target(app_key, mode_key)
    case app_key
    when "hello", "post_echo" then [:limit, 0.85]
    when "body_1mib", "file_10mib" then [:limit, 0.90]
    when "sinatra", "rails" then [:alone, mode_key == "w2" ? 0.80 : 0.90]
    end
  end

  # Catamount's p99 under `-c50` at most this share of Puma's where Puma queues: where Puma's
  # p99 at `-c50` is over PUMA_QUEUES_OVER_C1 times its p99 on one connection, its requests
  # spent most of that time waiting for a thread, not being served.
  P99_SHARE_TARGET = 0.5
  PUMA_QUEUES_OVER_C1 = 5.0

  def self.puma_queues?(puma_stats)
    p99 = puma_stats&.dig(:p99_ms)
    c1 = puma_stats&.dig(:c1_p99_ms)
    !!(p99 && c1 && c1.positive? && p99 > PUMA_QUEUES_OVER_C1 * c1)
  end

  # The p99 target is at `-c50`: the rows loaded with more connections are not judged by it.
  def self.p99_judged?(app_key)
    APPS.find { |a| a.key == app_key }&.load_connections == 50
  end

  # RSS after the load at or under Puma's ("app:mode").
  MEMORY_TARGETS = %w[post_echo:t5].freeze

  # The TLS apps that also run on Catamount over plain TCP in the same rounds, and the share of
  # that plain rate Catamount must keep over TLS.
  PLAIN_TWIN_APPS = %w[hello_tls].freeze
  TLS_SHARE_TARGET = 0.60

  # The pure-Rust limit server's arguments for the apps it has a twin of, in `-t 5:5` (nil: no
  # limit row): the same bytes, sent the way the best server could (from memory, sendfile for
  # to_path, the request's own body for the echo). Hello world, plain and over TLS (its
  # certificate comes with the bind), also in the cluster mode, with as many threads as the
  # cluster has workers.
  def self.limit_args(app_key, mode_key = "t5")
    return (mode_key == "w2" ? ["--threads", "2"] : nil) if %w[hello hello_tls].include?(app_key) && mode_key != "t5"
    return nil unless mode_key == "t5"

    case app_key
    when "hello", "hello_tls" then []
    when "body_1mib" then ["--body-bytes", (1 << 20).to_s]
    when "file_10mib" then ["--body-bytes", (10 << 20).to_s, "--body-from", "file"]
    when "post_echo" then ["--body-from", "request"]
    end
  end

  # Apps whose own Ruby work dominates: the bench also measures each alone (bench/lib/app_alone.rb),
  # in one process and in as many as the cluster mode has workers, as their ceiling. The
  # PostgreSQL lookup too: its app and its database's work per request are what no server can
  # take away, so its ceiling says whether 2x Puma is in reach on this machine at all.
  APP_ALONE = %w[cpu sinatra rails pg_lookup].freeze
  APP_ALONE_SCRIPT = File.expand_path("app_alone.rb", __dir__)

  # Loops each process of the app alone runs at once (1 unless listed). The lookup waits for
  # its database in every call: one loop would leave the CPUs idle meanwhile; with THREADS
  # loops the Ruby of one runs while the others' queries run in PostgreSQL.
  APP_ALONE_THREADS = { "pg_lookup" => 5 }.freeze

  def self.app_alone_threads(app_key)
    APP_ALONE_THREADS.fetch(app_key, 1)
  end

  # Catamount with metrics on (scraped once a second) beside the same server without, in these
  # scenarios; its rate must stay within 3% of the plain one's.
  METRICS_ROWS = %w[hello:t5 hello:w2].freeze
  METRICS_ON_TARGET = 0.97

  def self.metrics_row?(app_key, mode_key)
    METRICS_ROWS.include?("#{app_key}:#{mode_key}")
  end

  # The IO-bound apps Catamount also serves in its fiber mode, in the same rounds, and the ratio
  # over Puma it must reach there at `-t 5:5` (issue 25).
  FIBER_APPS = %w[sleep_c200 pg_sleep pg_lookup].freeze

  def self.fiber_target(app_key, mode_key)
    return nil unless mode_key == "t5" && FIBER_APPS.include?(app_key)

    app_key == "pg_lookup" ? 2.0 : 10.0
  end

  # Catamount's fiber mode beside its thread mode (the same rounds, and loaded side by side as the
  # metrics rows are), where a request that never waits must cost the fiber mode no more than
  # about what it costs a thread: its rate at least 0.9x the thread mode's (issue 25).
  FIBER_SHARE_ROWS = %w[hello:t5 cpu:t5].freeze
  FIBER_SHARE_TARGET = 0.9

  def self.fiber_share_row?(app_key, mode_key)
    FIBER_SHARE_ROWS.include?("#{app_key}:#{mode_key}")
  end

  # Whether Catamount also runs in its fiber mode in this scenario.
  def self.fiber_row?(app_key, mode_key)
    FIBER_APPS.include?(app_key) || fiber_share_row?(app_key, mode_key)
  end

  # Share of the pure-Rust limit that Catamount's single-mode hello world must reach (issue 25).
  LIMIT_SHARE_TARGET = share_target("hello", "t5").last
  # Share of the two-thread limit that Catamount's cluster-mode hello world must reach (issue 25).
  CLUSTER_LIMIT_SHARE_TARGET = share_target("hello", "w2").last
  # Normal load beside 50 slow clients, as a share of the same load alone.
  SLOW_READERS_TARGET = 0.8
  SLOWLORIS_TARGET = 0.9
end
