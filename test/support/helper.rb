# frozen_string_literal: true

require "minitest/autorun"
require "socket"
require "net/http"
require "json"
require "tmpdir"
require "rbconfig"
require "fileutils"
require_relative "../../lib/catamount/version"
require "server_process"
require "http_client"

# Every test class may run beside the others: all ports are chosen by the OS.
Minitest.parallel_executor = Minitest::Parallel::Executor.new(Integer(ENV.fetch("TEST_JOBS", "4")))

module Support
  ROOT = File.expand_path("../..", __dir__)
  APPS = File.join(ROOT, "test", "apps")

  # For test cases that all talk to one kitchen.ru server started per test.
  module KitchenServer
    def setup
      super
      @server = start_server
    end

    def port
      @server.port
    end
  end

  # Helpers mixed into every test case.
  module ServerTest
    include HttpClient

    # Starts a server with `args` (a bind on 127.0.0.1:0 is added unless a bind is given)
    # and waits for its boot line; stops it after the test.
    def start_server(*args, app: "kitchen.ru", env: {}, chdir: nil, boot: true)
      args = args.flatten
      args += ["-b", "tcp://127.0.0.1:0"] unless args.any? { |a| a.start_with?("-b", "--bind", "-p", "--port", "-C") }
      args << File.join(APPS, app) if app
      server = ServerProcess.new(args, env: env, chdir: chdir)
      (@servers ||= []) << server
      server.boot! if boot
      server
    end

    # The content of `path` once it exists and is not empty (bounded wait), or nil.
    def wait_for_file(path, timeout: 10)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      until File.size?(path)
        return nil if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

        sleep 0.02
      end
      File.read(path)
    end

    def teardown
      (@servers || []).each(&:kill)
      super
    end
  end
end
