# frozen_string_literal: true

require "ipaddr"
require "open3"
require "rbconfig"
require "tmpdir"

module Support
  # Separate "hosts" for a test: Linux network namespaces (`ip netns`), each joined to this
  # machine by a veth pair on its own /30 of a private /24 no route here covers, `lo` up inside,
  # and Catamount started in one with `ip netns exec` (which execs: the PID spawned is
  # Catamount's own, checked). Names carry the test process's PID and a count of its tests
  # (`cm<pid>t<n>h<i>`), so parallel tests and runs never collide and a killed run's leftovers are recognised and removed by the next.
  # Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN): otherwise the test is skipped with the reason
  # printed. Include beside Support::ServerTest; everything is deleted after the test.
  module Netns
    Host = Struct.new(:name, :address, :local, :dir, :server)
    PREFIX = "cm"
    COUNT = Mutex.new
    LOCK = File.join(Dir.tmpdir, "catamount-netns.lock")

    # `count` namespaces (Host: name, its address, this side's address), created under a lock
    # (two runs choosing the same /24 at once would both find it free).
    def netns_hosts(count)
      reason = Netns.unavailable
      if reason
        warn "\n#{self.class}##{name} skipped: #{reason}"
        skip reason
      end
      File.open(LOCK, File::RDWR | File::CREAT, 0o600) do |lock|
        lock.flock(File::LOCK_EX)
        Netns.remove_leftovers
        net = Netns.free_net
        test = Netns.next_test
        Array.new(count) { |i| netns_add("#{PREFIX}#{Process.pid}t#{test}h#{i}", net, i) }
      end
    end

    # Starts `catamount args` inside `host`'s namespace (a ServerProcess, killed after the test;
    # not waited for).
    def launch_in(host, args, chdir:)
      server = launch(args, command: ["ip", "netns", "exec", host.name, RbConfig.ruby, ServerProcess::BIN], chdir: chdir)
      # `ip netns exec` execs the command, so signals sent to this PID reach Catamount's master:
      # once ip has set the namespace up, the PID runs Ruby.
      exe = nil
      wait_until(timeout: 15) do
        exe = File.readlink("/proc/#{server.pid}/exe")
        File.basename(exe) != "ip"
      rescue SystemCallError
        true
      end
      raise "PID #{server.pid} is #{exe}, not Ruby: ip netns exec forked" unless File.basename(exe.to_s).start_with?("ruby")

      host.server = server
    end

    # PIDs of every process in `host`'s namespace.
    def netns_pids(host)
      Netns.pids(host.name)
    end

    # The machine dies: every process in the namespace is killed at once (Netns.kill_all).
    # Returns their PIDs once they are gone (bounded wait); the namespace and its address stay,
    # refusing connections as a host whose processes died does.
    def kill_host(host)
      killed = Netns.kill_all(host.name)
      gone = wait_until(timeout: 15) do
        host.server&.exited? # reaps the master, our child
        netns_pids(host).empty?
      end
      assert gone, "processes left in #{host.name}: #{netns_pids(host)}"
      killed
    end

    def teardown
      (@netns_hosts || []).each { |host| netns_delete(host.name) }
      super
    end

    PROBE = Mutex.new

    # Why namespaces cannot be made here, or nil (found out once: the tests run in threads).
    def self.unavailable
      PROBE.synchronize do
        @unavailable = [probe] unless defined?(@unavailable)
        @unavailable.first
      end
    end

    def self.probe
      return "network namespaces need root (uid #{Process.uid})" unless Process.uid.zero?

      probe = "#{PREFIX}#{Process.pid}probe"
      out, status = Open3.capture2e("ip", "netns", "add", probe)
      return "`ip netns add` failed (no CAP_SYS_ADMIN in this container?): #{out.strip}" unless status.success?

      system("ip", "netns", "delete", probe, err: File::NULL)
      nil
    rescue Errno::ENOENT
      "`ip` is not installed (Debian package iproute2; script/bootstrap installs it)"
    end

    # Namespaces and host-side veths named for a process that no longer runs: a run killed
    # before its ensure. Their processes are killed first (a namespace lives on while one does).
    def self.remove_leftovers
      `ip netns list`.scan(/^(#{PREFIX}(\d+)t\d+h\d+)/o).each do |name, pid|
        next if alive?(pid.to_i)

        kill_all(name)
        system("ip", "netns", "delete", name, err: File::NULL)
      end
      `ip -o link show`.scan(/^\d+: (#{PREFIX}(\d+)t\d+h\d+)@/o).each do |name, pid|
        system("ip", "link", "delete", name, err: File::NULL) unless alive?(pid.to_i)
      end
    end

    # A 10.X.Y.0/24 (X and Y from this PID) that no route here overlaps: other runs' veths
    # add their /30s to the main table, so they count too.
    def self.free_net
      routes = `ip -4 route show table all`.lines.filter_map do |line|
        prefix = line.split.find { |w| w.match?(%r{\A\d+\.\d+\.\d+\.\d+(/\d+)?\z}) } || (line.start_with?("default") && "0.0.0.0/0")
        IPAddr.new(prefix) if prefix
      end
      256.times do |step|
        x = 100 + ((Process.pid >> 8) + step / 256) % 100
        y = (Process.pid + step) % 256
        net = IPAddr.new("10.#{x}.#{y}.0/24")
        next if routes.any? { |r| r.prefix.positive? && (r.include?(net.to_range.first) || net.include?(r.to_range.first)) }

        return net
      end
      raise "no free 10.x.y.0/24 here"
    end

    def self.pids(name)
      out, = Open3.capture2e("ip", "netns", "pids", name)
      out.split.map(&:to_i)
    end

    # Stops every process in the namespace (so none forks or notices the others' end), then
    # kills them all with SIGKILL; returns their PIDs.
    def self.kill_all(name)
      stopped = []
      loop do # a process forked while the others were being stopped is stopped too
        fresh = pids(name) - stopped
        break if fresh.empty?

        fresh.each { |pid| signal("STOP", pid) }
        stopped.concat(fresh)
      end
      stopped.each { |pid| signal("KILL", pid) }
    end

    # 1, 2, ... for each test of this process that makes namespaces.
    def self.next_test
      COUNT.synchronize { @tests = (@tests || 0) + 1 }
    end

    def self.signal(name, pid)
      Process.kill(name, pid)
    rescue Errno::ESRCH
      nil
    end

    def self.alive?(pid)
      Process.kill(0, pid)
      true
    rescue Errno::ESRCH
      false
    rescue Errno::EPERM
      true
    end

    private

    # Namespace `name`, host i of `net`: 10.X.Y.(4i+1) on this side, .(4i+2) inside.
    def netns_add(name, net, index)
      base = net.to_range.first.to_i + (4 * index)
      local = IPAddr.new(base + 1, Socket::AF_INET).to_s
      address = IPAddr.new(base + 2, Socket::AF_INET).to_s
      inside = name.sub(/h(\d+)\z/, 'n\1')
      (@netns_hosts ||= []) << Host.new(name, address, local)
      [
        %W[ip netns add #{name}],
        %W[ip link add #{name} type veth peer name #{inside}],
        %W[ip link set #{inside} netns #{name}],
        %W[ip addr add #{local}/30 dev #{name}],
        %W[ip link set #{name} up],
        %W[ip netns exec #{name} ip addr add #{address}/30 dev #{inside}],
        %W[ip netns exec #{name} ip link set #{inside} up],
        %W[ip netns exec #{name} ip link set lo up]
      ].each do |command|
        out, status = Open3.capture2e(*command)
        raise "#{command.join(' ')}: #{out}" unless status.success?
      end
      @netns_hosts.last
    end

    # Kills what still runs inside, then deletes the namespace (its veth pair goes with it once
    # no process holds it) and the host side should it remain.
    def netns_delete(name)
      Netns.kill_all(name)
      wait_until(timeout: 10) { Netns.pids(name).empty? }
      system("ip", "netns", "delete", name, err: File::NULL)
      system("ip", "link", "delete", name, err: File::NULL) if `ip -o link show`.include?(" #{name}@")
    end
  end
end
