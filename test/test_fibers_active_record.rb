# frozen_string_literal: true

require "helper"

# The fiber mode's boot warning for ActiveRecord: unless Rails' isolation level is `:fiber`,
# ActiveRecord gives every request of a thread the same database connection, and in the fiber
# mode one thread runs many requests at once. Debian's ActiveRecord 6.1 (no isolation level at
# all) is loaded for real; Rails 7's `ActiveSupport::IsolatedExecutionState` is not packaged
# here, so its two settings are given by a stand-in module with the same method.
class TestFibersActiveRecord < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  WARNING = /Warning: fiber_scheduler runs several requests on one thread, and ActiveRecord (\S+) /

  def setup
    @dir = Dir.mktmpdir("catamount-fibers-ar")
  end

  def teardown
    super
    FileUtils.rm_rf(@dir)
  end

  # Boots `rackup` (its source) with `config` and answers one request, whose app writes
  # "served" to stderr: the warning comes at boot, so once that line is read stderr holds it if
  # it was written at all. Returns stderr.
  def boot_and_serve(rackup, config)
    File.write(File.join(@dir, "config.ru"), rackup)
    File.write(File.join(@dir, "puma.rb"), config)
    server = start_server("-C", File.join(@dir, "puma.rb"), "-b", "tcp://127.0.0.1:0",
                          File.join(@dir, "config.ru"), app: nil)
    assert_equal "ok", get(server.port, "/").body
    server.wait_for(/^served$/, stream: :stderr)
    server.stderr
  end

  ACTIVE_RECORD = <<~RUBY
    require "active_record"
    ActiveRecord::Base.establish_connection(adapter: "postgresql", database: "never_connected")
    run ->(_env) { $stderr.puts "served"; [200, {}, ["ok"]] }
  RUBY

  # Rails 7's switch, as the app would have set it.
  def with_isolation_level(level)
    <<~RUBY
      module ActiveSupport
        module IsolatedExecutionState
          def self.isolation_level = :#{level}
        end
      end
      #{ACTIVE_RECORD}
    RUBY
  end

  def test_active_record_6_1_in_the_fiber_mode_is_warned_about
    stderr = boot_and_serve(ACTIVE_RECORD, "fiber_scheduler\n")
    assert_equal Gem::Specification.find_by_name("activerecord").version.to_s, stderr[WARNING, 1], stderr
    assert_match(/use Rails 7\.0 or later with `config\.active_support\.isolation_level = :fiber`/, stderr)
  end

  def test_thread_isolation_in_the_fiber_mode_is_warned_about
    stderr = boot_and_serve(with_isolation_level(:thread), "fiber_scheduler\n")
    assert_match(WARNING, stderr)
    assert_match(/set `config\.active_support\.isolation_level = :fiber` in the app/, stderr)
  end

  def test_fiber_isolation_is_not_warned_about
    refute_match(WARNING, boot_and_serve(with_isolation_level(:fiber), "fiber_scheduler\n"))
  end

  def test_thread_mode_is_not_warned_about
    refute_match(WARNING, boot_and_serve(ACTIVE_RECORD, "threads 1, 1\n"))
  end

  def test_a_cluster_worker_loading_the_app_warns
    assert_match(WARNING, boot_and_serve(ACTIVE_RECORD, "fiber_scheduler\nworkers 1\npreload_app! false\n"))
  end
end
