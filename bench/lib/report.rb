# frozen_string_literal: true

module Bench
  # Turns the collected samples into the Markdown tables `make bench` prints.
  module Report
    module_function

    def median(values)
      values = values.compact.sort
      return nil if values.empty?

      mid = values.size / 2
      values.size.odd? ? values[mid] : (values[mid - 1] + values[mid]) / 2.0
    end

    # Summary of one server's samples in one scenario.
    def summarize(samples)
      c50 = samples.fetch(:c50, [])
      c1 = samples.fetch(:c1, [])
      rps = c50.map(&:rps)
      {
        rps: median(rps), rps_min: rps.min, rps_max: rps.max,
        p50_ms: median(c50.map(&:p50_ms)), p99_ms: median(c50.map(&:p99_ms)),
        c1_p50_ms: median(c1.map(&:p50_ms)), c1_p99_ms: median(c1.map(&:p99_ms)),
        requests: (c50 + c1).sum(&:requests),
        errors: (c50 + c1).sum { |r| r.errors + r.non_2xx }
      }
    end

    def ratio(a, b)
      a && b && b.positive? ? a / b : nil
    end

    def rate(value)
      value ? format("%.0f", value) : "–"
    end

    def spread(stats)
      return "–" unless stats && stats[:rps]

      "#{rate(stats[:rps])} (#{rate(stats[:rps_min])}–#{rate(stats[:rps_max])})"
    end

    def ms(value)
      value ? format("%.2f", value) : "–"
    end

    def times(value)
      value ? format("%.2fx", value) : "–"
    end

    def mib(kib)
      kib ? format("%.0f", kib / 1024.0) : "–"
    end

    def verdict(value, target)
      return "–" unless value && target

      value >= target ? "met" : "MISSED"
    end

    # A cell for a server that could not run the scenario.
    def cell(result, key)
      return result&.dig(:unsupported) ? "n/a" : "–" unless result&.dig(:stats)

      yield result[:stats][key]
    end

    def pair(servers, key, &format_value)
      %w[catamount puma].map { |k| cell(servers[k], key, &format_value) }.join(" / ")
    end

    def markdown(results)
      lines = []
      lines << "### Throughput (`wrk -t2 -c50` unless the row says `-c200`, req/s: median (min–max) over " \
               "#{results[:rounds]} rounds; mode: #{results[:mode] || 'shared'})"
      lines << ""
      lines << "| scenario | mode | Catamount | Puma | ratio | target | verdict |"
      lines << "|---|---|---|---|---|---|---|"
      results[:scenarios].each do |s|
        if s[:skipped]
          lines << "| #{s[:title]} | `#{s[:mode_title]}` | n/a (#{s[:skipped]}) | n/a | – | – | – |"
          next
        end

        c = s[:servers]["catamount"]
        p = s[:servers]["puma"]
        r = ratio(c&.dig(:stats, :rps), p&.dig(:stats, :rps))
        c_cell = c && c[:unsupported] ? "n/a (#{c[:unsupported]})" : spread(c&.dig(:stats))
        p_cell = p && p[:unsupported] ? "n/a (#{p[:unsupported]})" : spread(p&.dig(:stats))
        lines << "| #{s[:title]} | `#{s[:mode_title]}` | #{c_cell} | #{p_cell} | #{times(r)} | #{row_target(results, s, r)} |"
        metrics_row(s, lines)
        plain_row(s, lines)
        fiber_row(s, lines)
      end
      limit_lines(results, lines)
      tls_share_lines(results, lines)
      app_alone_lines(results, lines)
      lines << ""
      lines << "### Latency, errors and memory (Catamount / Puma)"
      lines << ""
      lines << "| scenario | mode | p50 ms | p99 ms | `-c1` p50 ms | `-c1` p99 ms | errors | RSS MiB | PSS MiB |"
      lines << "|---|---|---|---|---|---|---|---|---|"
      results[:scenarios].each do |s|
        sv = s[:servers]
        latency_row(s[:title], s[:mode_title], sv, lines)
        latency_row("#{s[:title]}, metrics on", s[:mode_title], { "catamount" => sv[METRICS_KEY] }, lines) if sv[METRICS_KEY]
        latency_row("#{s[:title]}: Catamount over plain TCP", s[:mode_title], { "catamount" => sv[PLAIN_KEY] }, lines) if sv[PLAIN_KEY]
        latency_row("#{s[:title]}, fiber mode", s[:mode_title], fiber_latency(s), lines) if sv[FIBER_KEY]
      end
      slow_lines(results, lines)
      anatomy_lines(results, lines)
      summary_lines(results, lines)
      lines.join("\n") + "\n"
    end

    # A throughput row's target and verdict cells: its ratio over Puma where the target is one,
    # else its share of the limit or of the app alone (the lines under the table give both).
    def row_target(results, scenario, ratio)
      return "≥ #{scenario[:target]}x | #{verdict(ratio, scenario[:target])}" if scenario[:target]

      share = Verdicts.share(results, scenario)
      share ? "#{share.target} of #{share.what.delete_prefix('share of ')} | #{share.verdict}" : "– | –"
    end

    # Every verdict of the run in one table, so the state shows at once.
    def summary_lines(results, lines)
      verdicts = Verdicts.all(results)
      missed = verdicts.count { |v| v.verdict == "MISSED" }
      met = verdicts.count { |v| v.verdict == "met" }
      lines << ""
      lines << "### Targets: every verdict of this run (#{met} met, #{missed} MISSED, " \
               "#{verdicts.size - met - missed} not judged)"
      lines << ""
      lines << "| target | scenario | mode | measured | needs | verdict |"
      lines << "|---|---|---|---|---|---|"
      verdicts.each do |v|
        mode = v.mode_title ? "`#{v.mode_title}`" : "–"
        lines << "| #{v.what} | #{v.scenario} | #{mode} | #{v.measured} | #{v.target} | #{v.verdict} |"
      end
    end

    def latency_row(title, mode_title, sv, lines)
      lines << "| #{title} | `#{mode_title}` | #{pair(sv, :p50_ms) { |v| ms(v) }} | #{pair(sv, :p99_ms) { |v| ms(v) }} | " \
               "#{pair(sv, :c1_p50_ms) { |v| ms(v) }} | #{pair(sv, :c1_p99_ms) { |v| ms(v) }} | #{pair(sv, :errors, &:to_s)} | " \
               "#{pair(sv, :rss_kib) { |v| mib(v) }} | #{pair(sv, :pss_kib) { |v| mib(v) }} |"
    end

    METRICS_KEY = "catamount_metrics"
    FIBER_KEY = "catamount_fiber"

    # The fiber mode's latency row: beside Puma's where its throughput row is against Puma.
    def fiber_latency(scenario)
      sv = scenario[:servers]
      { "catamount" => sv[FIBER_KEY], "puma" => (sv["puma"] unless Bench.fiber_share_row?(scenario[:app], scenario[:mode])) }
    end

    # Catamount in its fiber mode: against Puma in the IO-bound scenarios, as a share of the
    # thread mode's rate in the others.
    def fiber_row(scenario, lines)
      fiber = scenario[:servers][FIBER_KEY]
      return unless fiber
      return fiber_share_row(scenario, fiber, lines) if Bench.fiber_share_row?(scenario[:app], scenario[:mode])

      r = ratio(fiber.dig(:stats, :rps), scenario[:servers].dig("puma", :stats, :rps))
      target = Bench.fiber_target(scenario[:app], scenario[:mode])
      lines << "| #{scenario[:title]}, fiber mode | `#{scenario[:mode_title]}` | #{spread(fiber[:stats])} | " \
               "#{spread(scenario[:servers].dig('puma', :stats))} | #{times(r)} | #{target ? "≥ #{target}x" : '–'} | " \
               "#{verdict(r, target)} |"
    end

    # The fiber mode's rate as a share of the thread mode's, the median of each round's ratio
    # loaded side by side (the verdict's) and one after the other.
    def fiber_share_row(scenario, fiber, lines)
      share = round_ratio(scenario, :c50, over: FIBER_KEY)
      side = fiber_share(scenario)
      lines << "| #{scenario[:title]}, fiber mode | `#{scenario[:mode_title]}` | #{spread(fiber[:stats])} | – | " \
               "#{times(side)} of thread mode side by side (#{times(share)} alternating) | ≥ #{FIBER_SHARE_TARGET}x of threads | " \
               "#{verdict(side, FIBER_SHARE_TARGET)} |"
    end

    # The fiber mode's share of the thread mode's rate judged: loaded side by side.
    def fiber_share(scenario)
      round_ratio(scenario, :side_fiber, over: FIBER_KEY)
    end

    # The same Catamount with metrics on and scraped, as a share of its rate with them off, the
    # median of each round's ratio: the two loaded at once (the verdict's, as what else the
    # machine runs hits both alike) and one after the other.
    def metrics_row(scenario, lines)
      on = scenario[:servers][METRICS_KEY]
      return unless on

      share = round_ratio(scenario, :c50)
      side = round_ratio(scenario, :side)
      lines << "| #{scenario[:title]}, metrics on | `#{scenario[:mode_title]}` | #{spread(on[:stats])} | – | " \
               "#{times(side)} of metrics off side by side (#{times(share)} alternating) | ≥ #{METRICS_ON_TARGET}x of off | " \
               "#{verdict(side, METRICS_ON_TARGET)} |"
    end

    PLAIN_KEY = "catamount_plain"

    # Catamount over plain TCP beside Catamount over TLS, in the TLS scenarios that have it.
    def plain_row(scenario, lines)
      plain = scenario[:servers][PLAIN_KEY]
      return unless plain

      lines << "| #{scenario[:title]}: Catamount over plain TCP | `#{scenario[:mode_title]}` | #{spread(plain[:stats])} | – | " \
               "#{times(tls_share(scenario))} (TLS / plain) | ≥ #{TLS_SHARE_TARGET}x | #{verdict(tls_share(scenario), TLS_SHARE_TARGET)} |"
    end

    # Catamount's rate over TLS as a share of its rate over plain TCP: the median of the rounds'
    # ratios (the two run one right after the other in each round).
    def tls_share(scenario)
      round_ratio(scenario, :c50, over: "catamount", under: PLAIN_KEY)
    end

    def tls_share_lines(results, lines)
      twins = results[:scenarios].select { |s| s[:servers].dig(PLAIN_KEY, :stats) }
      return if twins.empty?

      lines << ""
      twins.each do |s|
        share = tls_share(s)
        lines << "Catamount #{s[:title]} `#{s[:mode_title]}`: #{percent(share)} of its own rate over plain TCP in the same " \
                 "rounds (target ≥ #{(TLS_SHARE_TARGET * 100).round}%: #{verdict(share, TLS_SHARE_TARGET)})."
      end
    end

    # The median over the rounds of one server's rate over another's (by default metrics on /
    # off) in the round's `kind` of samples.
    def round_ratio(scenario, kind, over: METRICS_KEY, under: "catamount")
      on = scenario[:servers].dig(over, :samples, kind) || []
      off = scenario[:servers].dig(under, :samples, kind) || []
      median(on.zip(off).map { |a, b| ratio(a[:rps], b&.dig(:rps)) })
    end

    def limit_lines(results, lines)
      limits = results[:scenarios].select { |s| s[:servers].dig("limit", :stats, :rps) }
      return if limits.empty?

      lines << ""
      limits.each do |limit_scenario|
        limit = limit_scenario[:servers].dig("limit", :stats, :rps)
        if limit_scenario[:app] == "hello" && limit_scenario[:mode] == "w2"
          cluster_limit_line(limit_scenario, limit, lines)
        elsif limit_scenario[:app] == "hello"
          hello_limit_lines(results, limit, lines)
        elsif limit_scenario[:app] == "hello_tls"
          tls_limit_lines(limit_scenario, limit, lines)
        else
          body_limit_lines(results, limit_scenario, limit, lines)
        end
      end
    end

    def hello_limit_lines(results, limit, lines)
      lines << "Pure-Rust limit (one reactor thread, no Ruby): #{rate(limit)} req/s."
      results[:scenarios].select { |s| s[:app] == "hello" && s[:mode] != "w2" }.each do |s|
        share = ratio(s[:servers].dig("catamount", :stats, :rps), limit)
        lines << "Catamount hello world `#{s[:mode_title]}`: #{percent(share)} of the limit " \
                 "(target ≥ #{(LIMIT_SHARE_TARGET * 100).round}%: #{verdict(share, LIMIT_SHARE_TARGET)})."
      end
    end

    # The cluster against a limit server with as many threads as it has workers.
    def cluster_limit_line(scenario, limit, lines)
      c = ratio(scenario[:servers].dig("catamount", :stats, :rps), limit)
      p = ratio(scenario[:servers].dig("puma", :stats, :rps), limit)
      lines << "Pure-Rust limit with two threads (as many as the cluster's workers, no Ruby): #{rate(limit)} req/s. " \
               "Hello world `#{scenario[:mode_title]}`: Catamount #{percent(c)} of it (target ≥ " \
               "#{(CLUSTER_LIMIT_SHARE_TARGET * 100).round}%: #{verdict(c, CLUSTER_LIMIT_SHARE_TARGET)}), Puma #{percent(p)}."
    end

    # Over TLS in each mode: a ratio of T needs Catamount at T times Puma's share of the limit.
    def tls_limit_lines(scenario, limit, lines)
      threads = scenario[:mode] == "w2" ? "two threads, as many as the cluster's workers" : "one thread"
      c = ratio(scenario[:servers].dig("catamount", :stats, :rps), limit)
      p = ratio(scenario[:servers].dig("puma", :stats, :rps), limit)
      needs = p && scenario[:target] ? ", so #{scenario[:target]}x Puma needs #{percent(p * scenario[:target])} of it" : ""
      lines << "Pure-Rust limit over TLS (rustls, #{threads}, no Ruby) `#{scenario[:mode_title]}`: " \
               "#{rate(limit)} req/s. Catamount hello world over TLS: #{percent(c)} of it; Puma #{percent(p)}#{needs}."
    end

    # A large body's limit caps every server: a ratio of T needs Puma at or under 1/T of it.
    def body_limit_lines(results, limit_scenario, limit, lines)
      how = case Bench.limit_args(limit_scenario[:app]).last
            when "file" then "the same bytes sent with sendfile from a file"
            when "request" then "each request's body written back as it arrives"
            else "the same bytes written from memory"
            end
      shares = results[:scenarios].select { |s| s[:app] == limit_scenario[:app] }.map do |s|
        c = Verdicts.share(results, s)
        p = percent(ratio(s[:servers].dig("puma", :stats, :rps), limit))
        "`#{s[:mode_title]}` Catamount #{c.measured} (target #{c.target}: #{c.verdict}), Puma #{p}"
      end
      lines << "Pure-Rust limit for the #{limit_scenario[:title]} (one thread, #{how}): " \
               "#{rate(limit)} req/s. Share of it: #{shares.join('; ')}."
    end

    # An app alone caps every server on it: a ratio of T needs Puma at or under 1/T of it.
    def app_alone_lines(results, lines)
      alone = results[:scenarios].select { |s| s[:app_alone] }
      return if alone.empty?

      lines << "" if results[:scenarios].none? { |s| s[:servers].dig("limit", :stats, :rps) }
      alone.each do |entry|
        ceilings = entry[:app_alone]
        shares = results[:scenarios].select { |s| s[:app] == entry[:app] }.map { |s| app_alone_share(results, s, ceilings) }
        rates = ceilings.map { |n, c| "#{n} process#{n == 1 ? '' : 'es'} #{rate(c[:rps])} req/s" }
        lines << "The #{entry[:title]} alone (called in a loop in Ruby#{app_alone_how(entry[:app])}: no server, no socket, no wrk): " \
                 "#{rates.join(', ')}. Share of it (cluster mode: of its #{ceilings.keys.max} processes): " \
                 "#{shares.join('; ')}."
      end
    end

    # How the app alone ran, beyond one loop a process with nothing else.
    def app_alone_how(app_key)
      threads = Bench.app_alone_threads(app_key)
      how = threads == 1 ? "" : ", #{threads} loops a process (threads)"
      APPS.find { |a| a.key == app_key }&.postgres ? "#{how}, on the same PostgreSQL" : how
    end

    # One mode's shares of the app alone: Catamount's (with its verdict where judged), its fiber
    # mode's where it ran, Puma's, and where the row's target is a ratio over Puma above 1, the
    # share of the ceiling that ratio needs (over 100%: no server can meet it on this machine).
    def app_alone_share(results, scenario, ceilings)
      ceiling = ceilings.dig(MODES.find { |m| m.key == scenario[:mode] }.workers || 1, :rps)
      c = percent(ratio(scenario[:servers].dig("catamount", :stats, :rps), ceiling))
      judged = Verdicts.share(results, scenario)
      c = "#{c} (target #{judged.target}: #{judged.verdict})" if judged
      fiber = scenario[:servers].dig(FIBER_KEY, :stats, :rps)
      c = "#{c}, fiber mode #{percent(ratio(fiber, ceiling))}" if fiber
      puma = ratio(scenario[:servers].dig("puma", :stats, :rps), ceiling)
      target = scenario[:target]
      needs = ""
      if puma && target && target > 1
        verdict = puma * target > 1 ? "above the ceiling" : "within it"
        needs = " (#{target}x Puma is #{percent(puma * target)} of it: #{verdict})"
      end
      "`#{scenario[:mode_title]}` Catamount #{c}, Puma #{percent(puma)}#{needs}"
    end

    def percent(share)
      share ? format("%.0f%%", share * 100) : "–"
    end

    def anatomy_lines(results, lines)
      anatomy = results[:anatomy]
      return unless anatomy && !anatomy.empty?

      keys = %w[catamount puma].select { |k| anatomy[k] }
      lines << ""
      lines << "### Cost per request (hello world, `-t 1:1`, one keep-alive connection, counted)"
      lines << ""
      lines << "| per request | #{keys.map { |k| k == 'catamount' ? 'Catamount' : 'Puma' }.join(' | ')} |"
      lines << "|---|#{keys.map { '---' }.join('|')}|"
      lines << "| Ruby objects allocated | #{keys.map { |k| anatomy[k][:objects_per_request] }.join(' | ')} |"
      lines << "| context switches | #{keys.map { |k| anatomy[k][:context_switches_per_request] }.join(' | ')} |"
      calls = keys.map { |k| anatomy[k][:syscalls_per_request] || {} }
      lines << "| system calls (strace) | #{calls.map { |c| c.empty? ? '–' : format('%.2f', c.values.sum) }.join(' | ')} |"
      names = calls.flat_map(&:keys).uniq.sort_by { |n| -calls.map { |c| c[n] || 0 }.max }
      names.each { |n| lines << "| `#{n}` | #{calls.map { |c| c[n] || 0 }.join(' | ')} |" }
    end

    def slow_lines(results, lines)
      slow = results[:slow_clients]
      return unless slow

      [["50", :readers, :loris], ["1,000", :readers_1000, :loris_1000]].each do |count, readers_key, loris_key|
        slow_table(slow, count, readers_key, loris_key, lines)
      end
      slow_memory_line(slow, lines)
      cat = slow[:servers].dig("catamount", :stats)
      return unless cat

      readers = ratio(cat[:readers][:rps], cat[:alone][:rps])
      loris = ratio(cat[:loris][:rps], cat[:alone][:rps])
      lines << ""
      lines << "Catamount keeps #{times(readers)} of its rate beside slow readers (target ≥ #{SLOW_READERS_TARGET}x: " \
               "#{verdict(readers, SLOW_READERS_TARGET)}) and #{times(loris)} beside slowloris " \
               "(target ≥ #{SLOWLORIS_TARGET}x: #{verdict(loris, SLOWLORIS_TARGET)})."
      return unless cat[:readers_1000]

      lines << "Beside 1,000 of each: #{times(ratio(cat[:readers_1000][:rps], cat[:alone][:rps]))} beside slow readers " \
               "(48 KiB pages), #{times(ratio(cat[:loris_1000][:rps], cat[:alone][:rps]))} beside slowloris."
    end

    def slow_table(slow, count, readers_key, loris_key, lines)
      lines << ""
      lines << "### Hello world (`-t 5:5`, `wrk -t2 -c50`) beside #{count} slow clients (req/s median, p99 ms)"
      lines << ""
      lines << "| server | alone | with #{count} slow readers | share | with #{count} slowloris | share |"
      lines << "|---|---|---|---|---|---|"
      slow[:servers].each do |key, entry|
        st = entry[:stats]
        next unless st && st[readers_key]

        readers = ratio(st[readers_key][:rps], st[:alone][:rps])
        loris = ratio(st[loris_key][:rps], st[:alone][:rps])
        label = key == "catamount" ? "Catamount" : "Puma"
        lines << "| #{label} | #{rate(st[:alone][:rps])}, p99 #{ms(st[:alone][:p99_ms])} | " \
                 "#{rate(st[readers_key][:rps])}, p99 #{ms(st[readers_key][:p99_ms])} | #{times(readers)} | " \
                 "#{rate(st[loris_key][:rps])}, p99 #{ms(st[loris_key][:p99_ms])} | #{times(loris)} |"
      end
    end

    # Each server's RSS growth while the 1,000 of each connected and settled, per connection (the
    # readers' 48 KiB pages included).
    def slow_memory_line(slow, lines)
      per = slow[:servers].filter_map do |key, entry|
        loris = entry.dig(:stats, :loris_1000, :rss_kib_per_conn)
        readers = entry.dig(:stats, :readers_1000, :rss_kib_per_conn)
        next unless loris && readers

        format("%s %.1f KiB per slowloris connection, %.1f KiB per slow reader", key == "catamount" ? "Catamount" : "Puma",
               loris, readers)
      end
      return if per.empty?

      lines << ""
      lines << "Memory per slow connection (RSS growth while 1,000 connect and settle, over 1,000; median of the rounds): #{per.join('; ')}."
    end
  end
end
