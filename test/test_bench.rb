# frozen_string_literal: true

require "helper"
require "open3"
require "timeout"

# The benchmark is code too: a short run against Catamount alone must complete every scenario
# and print well-formed tables. No timing is asserted; requests must succeed.
class TestBenchSmoke < Minitest::Test
  parallelize_me!

  RUNNER = File.join(Support::ROOT, "bench", "run.rb")

  def test_smoke_run_covers_every_scenario_and_prints_the_tables
    Dir.mktmpdir do |dir|
      json = File.join(dir, "bench.json")
      markdown = File.join(dir, "bench.md")
      out, err, status = Timeout.timeout(600) do
        Open3.capture3(RbConfig.ruby, "-w", RUNNER, "--smoke", "--json", json, "--markdown", markdown)
      end
      assert status.success?, "bench/run.rb --smoke failed:\n#{err[-3000..] || err}"
      refute_match(/warning:/, err)
      results = JSON.parse(File.read(json))
      check_scenarios(results["scenarios"])
      check_postgres(results)
      check_lookup_alone(results, File.read(markdown))
      check_slow_clients(results["slow_clients"])
      anatomy = results.dig("anatomy", "catamount")
      assert_operator anatomy["objects_per_request"], :>, 0
      assert_operator anatomy["context_switches_per_request"], :>=, 0
      # + the two rows with metrics on, the two of Catamount over plain TCP beside TLS, and the
      # fiber mode's beside each IO-bound scenario at -c200 and hello world and CPU-bound -t 5:5
      fiber_rows = results["scenarios"].count { |s| s["servers"].key?("catamount_fiber") }
      check_tables(out, File.read(markdown), results["scenarios"].size + 4 + fiber_rows)
    end
  end

  private

  def check_scenarios(scenarios)
    apps = %w[hello body_1mib file_10mib post_echo sleep cpu sinatra rails]
    tls = %w[hello_tls:t5 hello_tls:w2 body_1mib_tls:t5 connect_tls:t5]
    io_bound = %w[sleep_c200 pg_sleep pg_lookup].product(%w[t5 w2]).map { |a, m| "#{a}:#{m}" }
    assert_equal apps.product(%w[t5 t1 w2]).map { |a, m| "#{a}:#{m}" } + tls + io_bound,
                 scenarios.map { |s| "#{s['app']}:#{s['mode']}" }
    scenarios.each do |s|
      name = "#{s['app']}:#{s['mode']}"
      next if s["skipped"] # check_postgres
      cat = s["servers"]["catamount"]
      refute s["servers"].key?("puma"), "#{name}: --smoke runs Catamount alone"
      stats = cat.fetch("stats")
      assert_operator stats["requests"], :>, 0, name
      assert_equal 0, stats["errors"], name
      assert_operator stats["rps"], :>, 0, name
      assert_operator stats["rss_kib"], :>, stats["pss_kib"] / 2, name
      assert_operator stats["pss_kib"], :>, 0, name
    end
    check_metrics_on(scenarios)
    check_fiber_mode(scenarios)
    check_plain_twins(scenarios)
    %w[hello:t5 hello:w2 body_1mib:t5 file_10mib:t5 post_echo:t5 hello_tls:t5 hello_tls:w2].each do |key|
      app, mode = key.split(":")
      limit = scenarios.find { |s| s["app"] == app && s["mode"] == mode }["servers"]["limit"]
      assert_operator limit.dig("stats", "rps"), :>, 0, "#{key}: the pure-Rust limit ran and answered"
    end
    %w[cpu sinatra rails].each do |app|
      alone = scenarios.find { |s| s["app"] == app && s["mode"] == "t5" }["app_alone"]
      assert_equal %w[1 2], alone.keys, "#{app}: measured alone in one process and in two"
      alone.each_value { |a| assert_operator a["rps"], :>, 0, "#{app} alone" }
    end
  end

  # The PostgreSQL apps ran on the bench's own PostgreSQL (started and stopped by the run), or
  # print why it could not start: the only case they may be left out.
  def check_postgres(results)
    pg = results["scenarios"].select { |s| s["app"].start_with?("pg_") }
    if (reason = results.dig("postgres", "skipped"))
      warn "test_bench: the PostgreSQL scenarios were skipped: #{reason}"
      pg.each { |s| assert_equal reason, s["skipped"] }
      return
    end
    assert_equal({ "started" => true }, results["postgres"])
    pg.each { |s| assert_nil s["skipped"], "#{s['app']}:#{s['mode']}" }
  end

  # The PostgreSQL lookup also ran alone (its ceiling: no server), in one process and in two, on
  # the same PostgreSQL, and the report gives each mode's shares of it (unless PostgreSQL could
  # not start).
  def check_lookup_alone(results, markdown)
    return if results.dig("postgres", "skipped")

    alone = results["scenarios"].find { |s| s["app"] == "pg_lookup" && s["mode"] == "t5" }["app_alone"]
    assert_equal %w[1 2], alone.keys, "pg_lookup: measured alone in one process and in two"
    alone.each_value { |a| assert_operator a["rps"], :>, 0, "pg_lookup alone" }
    title = Regexp.escape("PostgreSQL indexed lookup as JSON, `-c200`")
    assert_match(/^The #{title} alone \(called in a loop in Ruby, \d+ loops a process \(threads\), on the same PostgreSQL: no server, no socket, no wrk\): 1 process \d+ req\/s, 2 processes \d+ req\/s\. Share of it \(cluster mode: of its 2 processes\): `-t 5:5` Catamount \d+%, fiber mode \d+%, Puma –; `-w 2 -t 5:5` Catamount \d+%, fiber mode \d+%, Puma –\.$/,
                 markdown)
  end

  # The IO-bound scenarios at -c200 (the PostgreSQL ones unless PostgreSQL could not start) and
  # hello world and CPU-bound -t 5:5 also ran Catamount in its fiber mode; no other scenario did.
  # The last two also loaded it side by side with the thread mode.
  def check_fiber_mode(scenarios)
    with = scenarios.select { |s| s["servers"].key?("catamount_fiber") }
    expected = scenarios.select { |s| %w[sleep_c200 pg_sleep pg_lookup].include?(s["app"]) && !s["skipped"] }
                        .map { |s| "#{s['app']}:#{s['mode']}" }
    assert_equal %w[hello:t5 cpu:t5] + expected, with.map { |s| "#{s['app']}:#{s['mode']}" }
    with.each do |s|
      fiber = s["servers"]["catamount_fiber"]
      assert_operator fiber.dig("stats", "rps"), :>, 0, "#{s['app']}:#{s['mode']} fiber mode"
      assert_equal 0, fiber.dig("stats", "errors"), "#{s['app']}:#{s['mode']} fiber mode"
      next unless %w[hello cpu].include?(s["app"])

      %w[catamount catamount_fiber].each do |key|
        side = s.dig("servers", key, "samples", "side_fiber")
        assert_operator side.first["rps"], :>, 0, "#{s['app']}: #{key} loaded side by side with the other"
      end
    end
  end

  # Hello world `-t 5:5` and `-w 2` also ran with metrics on, scraped while loaded; no other did.
  def check_metrics_on(scenarios)
    with = scenarios.select { |s| s["servers"].key?("catamount_metrics") }
    assert_equal %w[hello:t5 hello:w2], with.map { |s| "#{s['app']}:#{s['mode']}" }
    with.each do |s|
      on = s["servers"]["catamount_metrics"]
      assert_operator on.dig("stats", "rps"), :>, 0, s["mode"]
      assert_equal 0, on.dig("stats", "errors"), s["mode"]
      assert_operator on.dig("scrapes", "ok"), :>, 0, "#{s['mode']}: /metrics was scraped during the load"
      assert_equal 0, on.dig("scrapes", "failed"), s["mode"]
      %w[catamount catamount_metrics].each do |key|
        side = s.dig("servers", key, "samples", "side")
        assert_operator side.first["rps"], :>, 0, "#{s['mode']}: #{key} loaded side by side with the other"
      end
    end
  end

  # Hello world over TLS ran beside the same Catamount over plain TCP, in both modes; nothing
  # else did.
  def check_plain_twins(scenarios)
    with = scenarios.select { |s| s["servers"].key?("catamount_plain") }
    assert_equal %w[hello_tls:t5 hello_tls:w2], with.map { |s| "#{s['app']}:#{s['mode']}" }
    with.each do |s|
      plain = s["servers"]["catamount_plain"]
      assert_operator plain.dig("stats", "rps"), :>, 0, s["mode"]
      assert_equal 0, plain.dig("stats", "errors"), s["mode"]
    end
  end

  # The throughput rows judged by a share of a ceiling show that target and its verdict.
  def check_share_rows(throughput)
    rows = { "hello world" => [%w[t5 85 limit], %w[t1 85 limit]],
             "1 MiB body" => %w[t5 t1 w2].map { |m| [m, "90", "limit"] },
             "10 MiB to_path file" => %w[t5 t1 w2].map { |m| [m, "90", "limit"] },
             "100 KiB POST echo" => %w[t5 t1 w2].map { |m| [m, "85", "limit"] },
             "Sinatra route + ERB" => [%w[t5 90 alone], %w[t1 90 alone], ["w2", "80", "alone in 2 processes"]],
             "Rails 6.1 action + view" => [%w[t5 90 alone], %w[t1 90 alone], ["w2", "80", "alone in 2 processes"]] }
    rows.each do |title, modes|
      modes.each do |mode, share, of|
        what = of == "limit" ? "the limit" : "the app #{of}"
        assert_match(/^\| #{Regexp.escape(title)} \| #{Regexp.escape(MODE_TITLES[mode])} \| \d+ \(\d+–\d+\) \| – \| – \| ≥ #{share}% of #{what} \| (met|MISSED) \|$/,
                     throughput)
      end
    end
    assert_match(/^\| hello world \| `-w 2 -t 5:5` \| \d+ \(\d+–\d+\) \| – \| – \| ≥ 2.5x \| – \|$/, throughput)
    assert_match(/^\| CPU-bound \(~2 ms Ruby\) \| `-t 1:1` \| \d+ \(\d+–\d+\) \| – \| – \| ≥ 0.97x \| – \|$/, throughput)
  end

  MODE_TITLES = { "t5" => "`-t 5:5`", "t1" => "`-t 1:1`", "w2" => "`-w 2 -t 5:5`" }.freeze

  # The summary lists every target's verdict (values not checked: the smoke run is Catamount
  # alone, one short round): without Puma, its ratios, p99 and memory are not judged.
  def check_summary(markdown)
    summary = markdown[/^### Targets: every verdict of this run \(\d+ met, \d+ MISSED, \d+ not judged\)\n.*\z/m]
    refute_nil summary, "the summary of verdicts ends the report"
    verdict = "(met|MISSED)"
    expected = [
      ["ratio over Puma", "hello world", "w2", "–", "≥ 2.5x", "–"],
      *%w[t5 t1 w2].map { |m| ["ratio over Puma", "CPU-bound (~2 ms Ruby)", m, "–", "≥ 0.97x", "–"] },
      ["share of the limit", "hello world", "t5", "\\d+%", "≥ 85%", verdict],
      ["share of the limit", "hello world", "t1", "\\d+%", "≥ 85%", verdict],
      ["share of the two-thread limit", "hello world", "w2", "\\d+%", "≥ 85%", verdict],
      *%w[1\ MiB\ body 10\ MiB\ to_path\ file].product(%w[t5 t1 w2]).map { |t, m| ["share of the limit", t, m, "\\d+%", "≥ 90%", verdict] },
      *%w[t5 t1 w2].map { |m| ["share of the limit", "100 KiB POST echo", m, "\\d+%", "≥ 85%", verdict] },
      *["Sinatra route + ERB", "Rails 6.1 action + view"].flat_map do |t|
        [["share of the app alone", t, "t5", "\\d+%", "≥ 90%", verdict], ["share of the app alone", t, "t1", "\\d+%", "≥ 90%", verdict],
         ["share of the app alone in 2 processes", t, "w2", "\\d+%", "≥ 80%", verdict]]
      end,
      ["RSS after the load", "100 KiB POST echo", "t5", "\\d+ / – MiB \\(–\\)", "≤ 1.0x Puma's", "–"]
    ]
    expected.each do |what, title, mode, measured, target, result|
      row = "| #{what} | #{title} | #{MODE_TITLES[mode]} | "
      assert_match(/^#{Regexp.escape(row)}#{measured} \| #{Regexp.escape(target)} \| #{result} \|$/, summary)
    end
    assert_match(/^\| p99 at `-c50` where Puma queues \| every scenario \| – \| – \(Puma not run\) \| ≤ 0.5x Puma's \| – \|$/, summary)
    assert_match(/^\| metrics on, of metrics off \| hello world \| `-w 2 -t 5:5` \| [\d.]+x \| ≥ 0.97x \| #{verdict} \|$/, summary)
    ["hello world", "CPU-bound (~2 ms Ruby)"].each do |title|
      assert_match(/^\| fiber mode, of thread mode \| #{Regexp.escape(title)} \| `-t 5:5` \| [\d.]+x \| ≥ 0.9x \| #{verdict} \|$/, summary)
    end
    assert_match(/^\| over TLS, of plain TCP \| hello world over TLS \| `-t 5:5` \| [\d.]+x \| ≥ 0.6x \| #{verdict} \|$/, summary)
    assert_match(/^\| beside 50 slowloris, of alone \| hello world beside slow clients \| `-t 5:5` \| [\d.]+x \| ≥ 0.9x \| #{verdict} \|$/, summary)
  end

  def check_slow_clients(slow)
    stats = slow.dig("servers", "catamount", "stats")
    %w[alone readers loris readers_1000 loris_1000].each { |k| assert_operator stats.dig(k, "rps"), :>, 0, k }
  end

  def check_tables(out, markdown, row_count)
    assert_includes out, markdown.lines.drop(3).join # stdout has the tables written to --markdown
    throughput = markdown[/### Throughput.*?(?=\n###)/m]
    rows = throughput.lines.grep(/\A\| (?!scenario|---)/)
    assert_equal row_count, rows.size
    rows.each { |row| assert_equal 8, row.count("|"), row }
    ["`-t 5:5`", "`-w 2 -t 5:5`"].each do |mode|
      assert_match(/^\| hello world, metrics on \| #{Regexp.escape(mode)} \| \d+ \(\d+–\d+\) \| – \| [\d.]+x of metrics off side by side \([\d.]+x alternating\) \| ≥ 0.97x of off \| (met|MISSED) \|$/, throughput)
      assert_match(/^\| hello world, metrics on \| #{Regexp.escape(mode)} \| [\d.]+ \/ – \|/, markdown)
    end
    ["`-t 5:5`", "`-w 2 -t 5:5`"].each do |mode|
      assert_match(/^\| hello world over TLS: Catamount over plain TCP \| #{Regexp.escape(mode)} \| \d+ \(\d+–\d+\) \| – \| [\d.]+x \(TLS \/ plain\) \| ≥ 0.6x \| (met|MISSED) \|$/, throughput)
      assert_match(/^Catamount hello world over TLS #{Regexp.escape(mode)}: \d+% of its own rate over plain TCP in the same rounds \(target ≥ 60%: (met|MISSED)\)\.$/, markdown)
    end
    ["hello world", "CPU-bound (~2 ms Ruby)"].each do |title|
      assert_match(/^\| #{Regexp.escape(title)}, fiber mode \| `-t 5:5` \| \d+ \(\d+–\d+\) \| – \| [\d.]+x of thread mode side by side \([\d.]+x alternating\) \| ≥ 0.9x of threads \| (met|MISSED) \|$/, throughput)
      assert_match(/^\| #{Regexp.escape(title)}, fiber mode \| `-t 5:5` \| [\d.]+ \/ – \|/, markdown)
    end
    assert_match(/^\| hello world, a new TLS connection per request \| `-t 5:5` \| \d+ \(\d+–\d+\) \| – \| – \| – \| – \|$/, throughput)
    assert_match(/^\| Ruby objects allocated \| [\d.]+ \|$/, markdown)
    assert_match(/^Pure-Rust limit \(one reactor thread, no Ruby\): \d+ req\/s\.$/, markdown)
    assert_match(/^Pure-Rust limit with two threads \(as many as the cluster's workers, no Ruby\): \d+ req\/s\. Hello world `-w 2 -t 5:5`: Catamount \d+% of it \(target ≥ 85%: (met|MISSED)\), Puma –\.$/, markdown)
    ["20 ms sleep, `-c200`", "PostgreSQL `pg_sleep(0.02)`, `-c200`", "PostgreSQL indexed lookup as JSON, `-c200`"].each do |title|
      ["`-t 5:5`", "`-w 2 -t 5:5`"].each do |mode|
        assert_match(/^\| #{Regexp.escape(title)} \| #{Regexp.escape(mode)} \| (\d+ \(\d+–\d+\) \| – \| – \||n\/a \(PostgreSQL did not start: .*\) \| n\/a \| –) /, throughput)
      end
    end
    { "`-t 5:5`" => "one thread", "`-w 2 -t 5:5`" => "two threads, as many as the cluster's workers" }.each do |mode, threads|
      assert_match(/^Pure-Rust limit over TLS \(rustls, #{threads}, no Ruby\) #{Regexp.escape(mode)}: \d+ req\/s\. Catamount hello world over TLS: \d+% of it; Puma –\.$/, markdown)
    end
    { "1 MiB body (one thread, the same bytes written from memory)" => 90,
      "10 MiB to_path file (one thread, the same bytes sent with sendfile from a file)" => 90,
      "100 KiB POST echo (one thread, each request's body written back as it arrives)" => 85 }.each do |what, target|
      shares = ["`-t 5:5`", "`-t 1:1`", "`-w 2 -t 5:5`"].map { |m| "#{Regexp.escape(m)} Catamount \\d+% \\(target ≥ #{target}%: (met|MISSED)\\), Puma –" }
      assert_match(/^Pure-Rust limit for the #{Regexp.escape(what)}: \d+ req\/s\. Share of it: #{shares.join('; ')}\.$/, markdown)
    end
    { "CPU-bound (~2 ms Ruby)" => "", "Sinatra route + ERB" => " \\(target ≥ 80%: (met|MISSED)\\)",
      "Rails 6.1 action + view" => " \\(target ≥ 80%: (met|MISSED)\\)" }.each do |title, verdict|
      assert_match(/^The #{Regexp.escape(title)} alone \(called in a loop in Ruby: no server, no socket, no wrk\): 1 process \d+ req\/s, 2 processes \d+ req\/s\. Share of it .*`-w 2 -t 5:5` Catamount \d+%#{verdict}, Puma –\.$/, markdown)
    end
    check_share_rows(throughput)
    assert_match(/^\| Catamount \| \d+, p99 [\d.]+ \| \d+, p99 [\d.]+ \| [\d.]+x \| \d+, p99 [\d.]+ \| [\d.]+x \|$/, markdown)
    assert_match(/^### Hello world \(`-t 5:5`, `wrk -t2 -c50`\) beside 1,000 slow clients/, markdown)
    assert_match(/^Memory per slow connection \(RSS growth while 1,000 connect and settle, .*\): Catamount -?[\d.]+ KiB per slowloris connection, -?[\d.]+ KiB per slow reader\.$/, markdown)
    check_summary(markdown)
  end
end
