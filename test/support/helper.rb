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

    # The venv's Python, with the packages script/bootstrap installs (the tests' Python clients).
    PYTHON = File.join(Dir.home, ".cache", "catamount", "venv", "bin", "python3")

    # Starts a server with `args` (a bind on 127.0.0.1:0 is added unless a bind is given)
    # and waits for its boot line; stops it after the test.
    def start_server(*args, app: "kitchen.ru", env: {}, chdir: nil, boot: true)
      args = args.flatten
      args += ["-b", "tcp://127.0.0.1:0"] unless args.any? { |a| a.start_with?("-b", "--bind", "-p", "--port", "-C") }
      args << File.join(APPS, app) if app
      launch(args, env: env, chdir: chdir, boot: boot)
    end

    # Starts `catamount args` exactly as given (no bind or app added), killed after the test;
    # waits for its boot line when `boot`. `command:` as for ServerProcess.
    def launch(args, boot: false, **process_options)
      server = ServerProcess.new(args, **process_options)
      (@servers ||= []) << server
      server.boot! if boot
      server
    end

    # Runs wrk against `path` with `connections` keep-alive connections for at most `seconds`
    # while the block runs, then stops it. wrk is a C client: its load has no pauses of its own
    # (a Ruby client's threads wait for each other), so it keeps a small pool busy without a
    # break.
    def under_wrk(port, path, connections:, seconds: 30)
      pid = Process.spawn("wrk", "-t1", "-c#{connections}", "-d#{seconds}s", "http://127.0.0.1:#{port}#{path}",
                          out: File::NULL, err: File::NULL)
      yield
    ensure
      if pid
        kill_quietly(pid)
        Process.wait(pid)
      end
    end

    # Kills the server, then every process its boot lines name (`PID: n)`): workers of a test
    # that failed must not outlive it (the master goes first, or it would fork replacements).
    def kill_named_workers(server)
      server&.kill
      (server&.stdout.to_s + server&.stderr.to_s).scan(/PID: (\d+)\)/).flatten.each { |pid| kill_quietly(pid.to_i) }
    end

    def kill_quietly(pid, signal = "KILL")
      Process.kill(signal, pid)
    rescue Errno::ESRCH, Errno::EPERM
      nil
    end

    # Runs the block with the processes in `others` stopped (SIGSTOP), so that a connection made
    # in it is accepted by a cluster worker left running. Left to the kernel, an idle cluster's
    # new connections can all go to one worker (one CI run: 40 in a row), whichever reactor the
    # listener wakes first. A stop of a second or two is far inside `worker_timeout` (60 s).
    def with_only_one_worker_running(others)
      others.each { |pid| Process.kill("STOP", pid) }
      # The stop lands a moment after kill(2) returns: a thread running meanwhile can accept.
      stopped = wait_until { others.all? { |pid| all_threads_stopped?(pid) } }
      raise "workers #{others} not stopped" unless stopped

      yield
    ensure
      others.each { |pid| kill_quietly(pid, "CONT") }
    end

    # Whether every thread of `pid` is in a job-control stop (or gone).
    def all_threads_stopped?(pid)
      Dir.glob("/proc/#{pid}/task/*/stat").all? do |stat|
        File.read(stat).split(") ", 2).last.start_with?("T")
      rescue Errno::ENOENT, Errno::ESRCH
        true
      end
    end

    # The pid of each worker index's latest boot (from the master's boot lines), if alive.
    def live_worker_pids(server)
      server.stdout.scan(/Worker (\d+) \(PID: (\d+)\) booted/).to_h.values.map(&:to_i).select { |pid| alive?(pid) }
    end

    # A port nothing listens on right now (the OS picks it; closed again before use).
    def free_port
      server = TCPServer.new("127.0.0.1", 0)
      server.addr[1]
    ensure
      server&.close
    end

    def alive?(pid)
      Process.kill(0, pid)
      true
    rescue Errno::ESRCH
      false
    end

    # True once the block is (bounded wait).
    def wait_until(timeout: 10)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      until yield
        return false if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

        sleep 0.02
      end
      true
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

    # Sends lint.ru the requests Rack::Lint must accept: GET with a query, HEAD, POST with a
    # length, a chunked POST, a body large enough to spill to a temp file, 50 headers on HTTP/1.0.
    # Returns the Rack release the app reported.
    def exercise_lint_app(server)
      port = server.port
      response = raw_request(port, "GET /a?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert_equal 200, response.status
      sock = connect(port)
      sock.write("HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert_equal 200, read_response(sock, head_request: true).status
      assert_equal "abc", raw_request(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc").body
      assert_equal "abcdef", raw_request(port, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" \
                                               "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n").body
      big = "z" * (200 * 1024) # spills to a temp file: rack.input is then a File
      assert_equal big, raw_request(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: #{big.bytesize}\r\n" \
                                          "Connection: close\r\n\r\n#{big}").body
      headers = (1..50).map { |i| "X-H#{i}: #{i}\r\n" }.join
      assert_equal 200, raw_request(port, "GET / HTTP/1.0\r\n#{headers}\r\n").status
      refute_match(/Lint|Rack::Lint::LintError|Error/, server.stderr)
      response.headers["x-rack-release"]
    ensure
      sock&.close
    end

    # The next line a helper process (a Python client) reports on `io`, waiting at most `timeout`.
    def read_report(io, timeout: 60)
      raise "no report from the client in #{timeout} s" unless io.wait_readable(timeout)

      line = io.gets
      raise "the client ended without a report" if line.nil?

      line
    end

    # A temporary directory for this test's files (config files, marks), removed after it.
    def scratch_dir
      @scratch_dir ||= Dir.mktmpdir("catamount-test")
    end

    # Starts a server on 127.0.0.1:0 whose config file (`-C`) holds `config`, with `args` and
    # `app` as for #start_server.
    def start_with_config(config, *args, app:)
      path = File.join(scratch_dir, "puma.rb")
      File.write(path, config)
      start_server("-C", path, "-b", "tcp://127.0.0.1:0", *args, app: app)
    end

    def teardown
      (@servers || []).each(&:kill)
      FileUtils.rm_rf(@scratch_dir) if @scratch_dir
      super
    end
  end
end
