# frozen_string_literal: true

module Catamount
  module Plugins
    # `plugin :metrics`: what the puma-metrics gem's users write. Metrics are built in
    # (`metrics_url`, docs/metrics.md); the plugin only gives `metrics_url` puma-metrics' default,
    # `tcp://0.0.0.0:9393`, when the file has not set one (a later `metrics_url` line wins).
    class Metrics < Plugin
      DEFAULT_URL = "tcp://0.0.0.0:9393"

      def config(dsl)
        dsl.metrics_url(DEFAULT_URL) unless dsl.get(:metrics_url)
      end
    end
    register "metrics", Metrics
  end
end
