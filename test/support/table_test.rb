# frozen_string_literal: true

require "tmpdir"
require "fileutils"

module Support
  # For table-driven tests (one row per case, each checked against a real server): a server
  # started from a config file's text, and a check over every row that reports each failing
  # row at once and prints how many were tried. Include beside Support::ServerTest.
  module TableTest
    # Starts a server whose config file holds `config` and a bind on 127.0.0.1:0.
    def start_with_config(config, app: "kitchen.ru")
      dir = Dir.mktmpdir
      (@config_dirs ||= []) << dir
      path = File.join(dir, "puma.rb")
      File.write(path, "#{config}bind 'tcp://127.0.0.1:0'\n")
      start_server("-C", path, app: app)
    end

    # The block checks one row: nil when it behaved, else what went wrong.
    def assert_rows(rows, what, &check)
      failures = rows.filter_map(&check)
      assert_empty failures, failures.join("\n")
      puts "\n#{rows.size} #{what} tried"
    end

    def teardown
      super
      (@config_dirs || []).each { |dir| FileUtils.rm_rf(dir) }
    end
  end
end
