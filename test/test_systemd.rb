# frozen_string_literal: true

require "helper"
require "systemd_notify"

# Catamount run the way systemd runs it, by Debian's `systemd-socket-activate` (it holds the
# listening sockets, starts the server on the first connection with LISTEN_FDS, and passes the
# environment a unit would set): the activated sockets are adopted
# (`--bind-to-activated-sockets=only`), the connection that caused the activation is served,
# READY, STATUS, WATCHDOG, RELOADING and STOPPING reach the NOTIFY_SOCKET the test listens on,
# and a hot restart keeps the sockets: a client that keeps asking through it gets every answer.
# (test/test_restarts.rb covers the same logic with the variables set by hand.)
class TestSystemd < Minitest::Test
  include Support::ServerTest
  include Support::SystemdNotify
  parallelize_me!

  ACTIVATE = "/usr/bin/systemd-socket-activate"

  def setup
    super
    skip "needs #{ACTIVATE} (Debian's systemd package)" unless File.executable?(ACTIVATE)
  end

  def test_socket_activated_server_adopts_the_sockets_notifies_and_keeps_them_across_a_restart
    activated_server_keeps_its_sockets([], "USR2", status: %r{\ASTATUS=Catamount [\d.]+: worker: \{ 2/2 threads, \d available, 0 backlog \}\z})
  end

  # A preloaded cluster's phased restart starts a fresh worker 0 (a new run of the command, a
  # child of the master): systemd's sockets reach it too.
  def test_a_preloaded_clusters_phased_restart_keeps_the_activated_sockets
    activated_server_keeps_its_sockets(["-w", "2", "--preload"], "USR1", status: /\ASTATUS=Catamount [\d.]+: cluster: 2\/2/,
                                                                        restarted: /\A(?=.*Worker 0 [^\n]*booted[^\n]*phase: 1)(?=.*Worker 1 [^\n]*booted[^\n]*phase: 1)/m)
  end

  private

  def activated_server_keeps_its_sockets(args, signal, status:, restarted: /Catamount starting.*Catamount starting/m)
    Dir.mktmpdir("systemd") do |dir|
      File.write("#{dir}/app.ru", <<~RUBY)
        run ->(env) { [200, { "content-type" => "text/plain" }, ["pid \#{Process.pid} \#{env['PATH_INFO']}"]] }
      RUBY
      unix = "#{dir}/app.sock"
      notify = Socket.new(:UNIX, :DGRAM)
      notify.bind(Socket.sockaddr_un("#{dir}/notify"))
      server, port = activate(dir, unix, args)

      # The first connection starts the server; its request waits in the socket's backlog.
      first = Thread.new { unix_get(unix, "/first") }
      server.wait_for(/Use Ctrl-C to stop/, timeout: 30)
      assert_match(%r{\Apid \d+ /first\z}, first.value, "the connection that activated the server is served")
      listening = server.stdout.scan(/Listening on (\S+) \(inherited\)/).flatten
      assert_equal ["unix://#{unix}", "http://127.0.0.1:#{port}"].sort, listening.sort,
                   "both activated sockets adopted, no other bind:\n#{server.stdout}"
      assert_equal 2, server.stdout.scan("Listening on").size
      assert_match(/\Apid \d+ \/tcp\z/, raw_request(port, "GET /tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body)

      notification(notify, /\AREADY=1\z/)
      notification(notify, status)
      notification(notify, /\AWATCHDOG=1\z/)

      # A hot restart: the same sockets go on, a client asking all along is always answered.
      answers = []
      asking = Thread.new do
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 60
        until Thread.current[:stop] || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
          answers << unix_get(unix, "/during")
        end
      end
      assert wait_until(timeout: 15) { answers.size >= 5 }
      server.signal(signal)
      if signal == "USR2"
        notification(notify, /\ARELOADING=1\z/)
        notification(notify, /\AREADY=1\z/, timeout: 30)
      end
      server.wait_for(restarted, timeout: 30)
      before = answers.size
      assert wait_until(timeout: 15) { answers.size >= before + 5 }, "answered after the restart"
      asking[:stop] = true
      asking.join(30)
      warn server.stdout, server.stderr unless answers.all? { |a| a.match?(%r{\Apid \d+ /during\z}) }
      assert answers.all? { |a| a.match?(%r{\Apid \d+ /during\z}) }, "every request across the restart answered: #{answers.reject { |a| a.match?(/during/) }.first(3)}"
      warn "systemd-socket-activate: #{answers.size} requests across a #{signal} restart#{args.empty? ? '' : " (#{args.join(' ')})"}, " \
           "#{answers.count { |a| !a.match?(/during/) }} failed"
      assert_match(%r{\Apid \d+ /tcp\z}, raw_request(port, "GET /tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body, "TCP after it")

      server.signal("TERM")
      notification(notify, /\ASTOPPING=1\z/)
      server.wait_exit
    ensure
      notify&.close
    end
  end

  # Starts systemd-socket-activate holding a UNIX socket and a loopback TCP port (a free one:
  # the tool cannot bind port 0; retried if another process takes it first), with the
  # environment a Type=notify unit with WatchdogSec=1 gives; returns the process and the port.
  def activate(dir, unix, args)
    3.times do
      port = free_port
      command = [ACTIVATE, "-l", unix, "-l", "127.0.0.1:#{port}",
                 "-E", "NOTIFY_SOCKET=#{dir}/notify", "-E", "WATCHDOG_USEC=1000000",
                 RbConfig.ruby, ServerProcess::BIN]
      server = launch(["--bind-to-activated-sockets=only", "-t", "2:2", *args, "app.ru"], command: command, chdir: dir)
      listening = wait_until(timeout: 15) { server.stderr.scan(/Listening on/).size == 2 || server.exited? }
      return [server, port] if listening && !server.exited?
      next if server.stderr.include?("Address already in use")

      flunk "systemd-socket-activate did not listen:\n#{server.stderr}"
    end
    flunk "no free port for systemd-socket-activate"
  end

  def unix_get(path, target)
    sock = UNIXSocket.new(path)
    sock.write("GET #{target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raise "no answer" unless sock.wait_readable(30)

    sock.read.split("\r\n\r\n", 2).last.to_s
  rescue SystemCallError, IOError => e
    "failed: #{e.class}"
  ensure
    sock&.close
  end
end
