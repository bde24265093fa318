# frozen_string_literal: true

# The single-mode runner's main loop (Catamount::Single) against a stand-in server: no built
# extension, no sockets.
require "minitest/autorun"
require "stringio"
require "timeout"
%w[context restart pool timers serving single launcher].each { |f| require_relative "../../lib/catamount/#{f}" }

class TestSingle < Minitest::Test
  # Only what `serve` calls. `wait` fails the way a native error would.
  class FailingServer
    def start; end

    def wait
      raise IOError, "the reactor failed"
    end

    def next_pool_action
      :stop
    end
  end

  # The configuration's Ruby side, as far as `serve` reads it.
  class Config
    def plugins = []
    def run_hooks(*, **) = nil
    def log_formatter = nil
    def custom_logger = nil
    def options = {}
  end

  # The thread waiting for the server wakes the main thread even when the wait raises: the run
  # ends instead of waiting for a signal forever (without the `ensure`, it fails after 2 s).
  def test_the_main_thread_is_woken_when_the_wait_raises
    out = StringIO.new
    context = Catamount::Context.new(nil, [], out: out, err: StringIO.new)
    context.config = Config.new
    single = Catamount::Single.new(context, signals: Queue.new) # no traps feed it
    reporting = Thread.report_on_exception
    Thread.report_on_exception = false
    status = Timeout.timeout(2) { single.serve(FailingServer.new, nil, {}) }
    assert_equal Catamount::Launcher::OK, status
    assert_includes out.string, "Goodbye"
  ensure
    Thread.report_on_exception = reporting
  end
end
