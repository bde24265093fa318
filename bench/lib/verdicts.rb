# frozen_string_literal: true

module Bench
  # Every target of a run judged in one place (issue 25's restated targets, and the older ones
  # still standing): the report prints them beside their rows and all together in a summary.
  # `measured` and `target` are the texts shown; `verdict` is "met", "MISSED" or "–" (not measured
  # in this run, e.g. no Puma in a smoke run).
  Verdict = Struct.new(:what, :scenario, :mode_title, :measured, :target, :verdict, keyword_init: true)

  module Verdicts
    module_function

    def all(results)
      scenarios = results[:scenarios].reject { |s| s[:skipped] }
      ratio_verdicts(scenarios) + fiber_verdicts(scenarios) + share_verdicts(results, scenarios) +
        p99_verdicts(scenarios) + memory_verdicts(scenarios) + other_verdicts(results, scenarios)
    end

    # Catamount over Puma, where the target is a ratio.
    def ratio_verdicts(scenarios)
      scenarios.select { |s| s[:target] }.map do |s|
        r = Report.ratio(rps(s, "catamount"), rps(s, "puma"))
        Verdict.new(what: "ratio over Puma", scenario: s[:title], mode_title: s[:mode_title], measured: Report.times(r),
                    target: "≥ #{s[:target]}x", verdict: Report.verdict(r, s[:target]))
      end
    end

    def fiber_verdicts(scenarios)
      scenarios.filter_map do |s|
        target = Bench.fiber_target(s[:app], s[:mode])
        next unless target && s[:servers][Report::FIBER_KEY]

        r = Report.ratio(rps(s, Report::FIBER_KEY), rps(s, "puma"))
        Verdict.new(what: "fiber mode over Puma", scenario: s[:title], mode_title: s[:mode_title],
                    measured: Report.times(r), target: "≥ #{target}x", verdict: Report.verdict(r, target))
      end
    end

    # Catamount's share of the limit server or of the app-alone ceiling its row is judged by.
    def share_verdicts(results, scenarios)
      scenarios.filter_map { |s| share(results, s) }
    end

    # The share verdict of one scenario (nil: it has no share target).
    def share(results, scenario)
      kind, target = Bench.share_target(scenario[:app], scenario[:mode])
      return unless kind

      ceiling, what = kind == :limit ? limit_of(results, scenario) : alone_of(results, scenario)
      share = Report.ratio(rps(scenario, "catamount"), ceiling)
      Verdict.new(what: "share of #{what}", scenario: scenario[:title], mode_title: scenario[:mode_title],
                  measured: Report.percent(share), target: "≥ #{Report.percent(target)}",
                  verdict: Report.verdict(share, target))
    end

    # The limit server a scenario is judged against: the two-thread one beside the cluster's
    # hello world, else the one-thread one run beside the app's `-t 5:5` row.
    def limit_of(results, scenario)
      two = scenario[:app] == "hello" && scenario[:mode] == "w2"
      limit = find(results, scenario[:app], two ? "w2" : "t5")&.dig(:servers, "limit", :stats, :rps)
      [limit, two ? "the two-thread limit" : "the limit"]
    end

    def alone_of(results, scenario)
      processes = MODES.find { |m| m.key == scenario[:mode] }.workers || 1
      alone = find(results, scenario[:app], "t5")&.dig(:app_alone, processes, :rps)
      [alone, processes == 1 ? "the app alone" : "the app alone in #{processes} processes"]
    end

    # Catamount's p99 at `-c50` against Puma's, in the scenarios where Puma queues
    # (Bench.puma_queues?). Without Puma in the run, one row says it could not be judged.
    def p99_verdicts(scenarios)
      judged = scenarios.select { |s| s.dig(:servers, "puma", :stats) }
      if judged.empty?
        return [Verdict.new(what: "p99 at `-c50` where Puma queues", scenario: "every scenario", mode_title: nil,
                            measured: "– (Puma not run)", target: "≤ #{P99_SHARE_TARGET}x Puma's", verdict: "–")]
      end

      judged.filter_map { |s| p99(s) }
    end

    # The p99 verdict of one scenario (nil: Puma does not queue there, or the row is not `-c50`).
    def p99(scenario)
      return unless Bench.p99_judged?(scenario[:app]) && Bench.puma_queues?(scenario.dig(:servers, "puma", :stats))

      c = scenario.dig(:servers, "catamount", :stats, :p99_ms)
      p = scenario.dig(:servers, "puma", :stats, :p99_ms)
      r = Report.ratio(c, p)
      Verdict.new(what: "p99 at `-c50` where Puma queues", scenario: scenario[:title], mode_title: scenario[:mode_title],
                  measured: "#{Report.ms(c)} / #{Report.ms(p)} ms (#{Report.times(r)})",
                  target: "≤ #{P99_SHARE_TARGET}x Puma's", verdict: at_most(r, P99_SHARE_TARGET))
    end

    # RSS after the load against Puma's, where a target says so.
    def memory_verdicts(scenarios)
      MEMORY_TARGETS.filter_map do |key|
        app, mode = key.split(":")
        s = scenarios.find { |x| x[:app] == app && x[:mode] == mode }
        next unless s

        c = s.dig(:servers, "catamount", :stats, :rss_kib)
        p = s.dig(:servers, "puma", :stats, :rss_kib)
        r = Report.ratio(c&.to_f, p)
        Verdict.new(what: "RSS after the load", scenario: s[:title], mode_title: s[:mode_title],
                    measured: "#{Report.mib(c)} / #{Report.mib(p)} MiB (#{Report.times(r)})", target: "≤ 1.0x Puma's",
                    verdict: at_most(r, 1.0))
      end
    end

    # The targets the report already judges elsewhere: metrics on, the fiber mode's share of the
    # thread mode, TLS over plain, slow clients.
    def other_verdicts(results, scenarios)
      list = scenarios.select { |s| s[:servers][Report::METRICS_KEY] }.map do |s|
        side = Report.round_ratio(s, :side)
        Verdict.new(what: "metrics on, of metrics off", scenario: s[:title], mode_title: s[:mode_title],
                    measured: Report.times(side), target: "≥ #{METRICS_ON_TARGET}x", verdict: Report.verdict(side, METRICS_ON_TARGET))
      end
      list += scenarios.select { |s| Bench.fiber_share_row?(s[:app], s[:mode]) && s[:servers][Report::FIBER_KEY] }.map do |s|
        side = Report.fiber_share(s)
        Verdict.new(what: "fiber mode, of thread mode", scenario: s[:title], mode_title: s[:mode_title],
                    measured: Report.times(side), target: "≥ #{FIBER_SHARE_TARGET}x", verdict: Report.verdict(side, FIBER_SHARE_TARGET))
      end
      list += scenarios.select { |s| s[:servers].dig(Report::PLAIN_KEY, :stats) }.map do |s|
        share = Report.tls_share(s)
        Verdict.new(what: "over TLS, of plain TCP", scenario: s[:title], mode_title: s[:mode_title],
                    measured: Report.times(share), target: "≥ #{TLS_SHARE_TARGET}x", verdict: Report.verdict(share, TLS_SHARE_TARGET))
      end
      list + slow_verdicts(results)
    end

    def slow_verdicts(results)
      cat = results.dig(:slow_clients, :servers, "catamount", :stats)
      return [] unless cat

      [[:readers, "beside 50 slow readers, of alone", SLOW_READERS_TARGET],
       [:loris, "beside 50 slowloris, of alone", SLOWLORIS_TARGET]].map do |key, what, target|
        r = Report.ratio(cat.dig(key, :rps), cat.dig(:alone, :rps))
        Verdict.new(what: what, scenario: SLOW_CLIENTS_APP.title, mode_title: MODES.first.title, measured: Report.times(r),
                    target: "≥ #{target}x", verdict: Report.verdict(r, target))
      end
    end

    def at_most(value, target)
      return "–" unless value

      value <= target ? "met" : "MISSED"
    end

    def rps(scenario, key)
      scenario.dig(:servers, key, :stats, :rps)
    end

    def find(results, app, mode)
      results[:scenarios].find { |s| s[:app] == app && s[:mode] == mode }
    end
  end
end
