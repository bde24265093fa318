# frozen_string_literal: true

require "steady_load"

module Support
  # For tests that change a running server (restarts, worker counts, reforks) under a steady
  # load of requests and count what failed. Include beside Support::ServerTest.
  module UnderLoad
    # Answers "<version> <pid>"; the version is written into the file, so rewriting the file is
    # a code change a restart must pick up.
    def app_source(version)
      <<~RUBY
        run lambda { |env|
          if env["PATH_INFO"] == "/slow"
            File.write("slow-started", "1")
            sleep 0.5
          end
          [200, { "content-type" => "text/plain" }, ["#{version} \#{Process.pid}"]]
        }
      RUBY
    end

    # Starts `catamount args` on app.ru (version "v1") in a fresh directory (named DIR in `args`).
    def serve(*args, config: "", env: {})
      Dir.mktmpdir do |dir|
        File.write("#{dir}/app.ru", app_source("v1"))
        File.write("#{dir}/puma.rb", config)
        args = args.map { |a| a.gsub("DIR", dir) }
        server = launch(["-C", "#{dir}/puma.rb", "-b", "tcp://127.0.0.1:0", *args, "app.ru"],
                        env: env, chdir: dir, boot: true)
        yield server, dir
      ensure
        kill_named_workers(server)
      end
    end

    # The bodies' versions seen so far ("v1" => count, ...).
    def versions(load)
      load.bodies.each_with_object(Hash.new(0)) { |(body, n), h| h[body.split.first] += n }
    end

    # Runs a load, does `event` once it flows, waits until `done` (given the load) holds, lets
    # more requests through, and asserts none failed. Returns the load.
    def under_load(port, event:, done:, keep_alive: 2, fresh: 2)
      load = SteadyLoad.new(port, keep_alive: keep_alive, fresh: fresh)
      assert load.wait_for_more(40), "the load never flowed: #{load.summary}"
      event.call
      assert wait_until(timeout: 40) { done.call(load) }, "never done: #{load.summary}"
      assert load.wait_for_more(60), "no answers after the event: #{load.summary}"
      load.stop
      warn load.summary if ENV["LOAD_SUMMARY"]
      load
    ensure
      load&.stop
    end

    # Under load: writes `version` into app.ru, sends `signal`, and waits until that version
    # answers; asserts no request failed.
    def new_code_under_load(server, dir, version, signal)
      load = under_load(server.port,
                        event: lambda {
                          File.write("#{dir}/app.ru", app_source(version))
                          server.signal(signal)
                        },
                        done: ->(l) { versions(l)[version].positive? })
      assert_empty load.failures, load.summary
    end

    # Kills worker `pid` (index 0) with SIGKILL under a load of fresh connections, until its
    # replacement booted. Fresh connections only: a killed worker can fail at most the one
    # request each client has in flight (keep-alive clients would also see their idle
    # connections to it reset); asserts that, and that the master saw how it died.
    def kill_worker_0_under_load(server, pid)
      load = under_load(server.port,
                        keep_alive: 0, fresh: 4,
                        event: -> { Process.kill("KILL", pid) },
                        done: ->(_) { server.stdout.scan(/Worker 0 \(PID: \d+\) booted/).size == 2 })
      per_client = load.failures.group_by(&:client).transform_values(&:size)
      assert per_client.values.all? { |n| n <= 1 }, "a client failed more than its one in-flight request: #{load.summary}"
      assert_match(/Worker 0 \(PID: #{pid}\) died \(killed by SIGKILL\)/, server.stdout)
    end

    # Under load: writes `version` into app.ru, sends USR1 and waits until the phased restart
    # is complete; asserts no request failed.
    def phased_restart_under_load(server, dir, version)
      load = under_load(server.port,
                        event: lambda {
                          File.write("#{dir}/app.ru", app_source(version))
                          server.signal("USR1")
                        },
                        done: ->(_) { server.stdout.include?("Phased restart complete") })
      assert_empty load.failures, load.summary
    end

    # Under `load` (through a proxy): v2 of app.ru and a phased restart (USR1) until v2 answers,
    # then v3 and a hot restart (USR2) until v3 answers, then the load runs to 2,000 answers in
    # all (at least 200 more) and stops.
    def phased_then_hot_restart(server, dir, load)
      assert load.wait_for_more(200), load.summary
      File.write("#{dir}/app.ru", app_source("v2"))
      server.signal("USR1")
      assert wait_until(timeout: 60) { server.stdout.include?("Phased restart complete") }, server.stdout
      assert load.wait_for_bodies { |b| b.keys.any? { |k| k.start_with?("v2 ") } }, load.summary
      assert load.wait_for_more(200), load.summary
      File.write("#{dir}/app.ru", app_source("v3"))
      server.signal("USR2")
      assert load.wait_for_bodies(timeout: 60) { |b| b.keys.any? { |k| k.start_with?("v3 ") } }, load.summary
      assert load.wait_for_more([2000 - load.ok, 200].max, timeout: 90), load.summary
      load.stop
    end

    # Every answer to a fresh load comes from `version` of the app, and none fails.
    def assert_only_version_served(server, version)
      after = SteadyLoad.new(server.port, keep_alive: 0, fresh: 2)
      assert after.wait_for_more(30), after.summary
      after.stop
      assert_equal [version], versions(after).keys, after.summary
      assert_empty after.failures, after.summary
    end
  end
end
