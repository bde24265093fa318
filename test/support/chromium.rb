# frozen_string_literal: true

require "tmpdir"
require "fileutils"

# A headless chromium (Debian's, script/bootstrap installs it) for the browser tests: started
# with a DevTools port the OS chooses and a profile of its own; its DevTools WebSocket URL read
# from its stderr (bounded); stopped by its PID (its process group: the renderers are its
# children) with the profile removed. test/support/rails_browser.py drives it.
class Chromium
  FLAGS = %w[--headless=new --remote-debugging-port=0 --no-sandbox --disable-gpu --no-first-run
             --no-default-browser-check --disable-background-networking --disable-component-update
             --disable-dev-shm-usage --disable-extensions].freeze

  attr_reader :pid, :devtools_url

  def self.command
    ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |dir| File.join(dir, "chromium") }.find { |p| File.executable?(p) }
  end

  def initialize(command: self.class.command, timeout: 60)
    @profile = Dir.mktmpdir("catamount-chromium")
    err_r, err_w = IO.pipe
    # --no-sandbox: the tests may run as root, where chromium's sandbox refuses to start.
    @pid = Process.spawn(command, *FLAGS, "--user-data-dir=#{@profile}", "about:blank",
                         out: File::NULL, err: err_w, in: File::NULL, pgroup: true)
    err_w.close
    @stderr = +""
    @devtools_url = read_devtools_url(err_r, timeout)
    # Chromium keeps writing to stderr (D-Bus complaints in a container): drained, or it blocks.
    @drain = Thread.new { err_r.each_line { |line| @stderr << line if @stderr.bytesize < 65_536 } }
  rescue StandardError
    stop
    raise
  end

  def stop
    if @pid
      signal("TERM")
      signal("KILL") unless wait(10)
      wait(5)
      @pid = nil
    end
    FileUtils.rm_rf(@profile) if @profile
  end

  private

  def read_devtools_url(io, timeout)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      url = @stderr[%r{^DevTools listening on (ws://\S+)}, 1]
      return url if url

      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      raise "chromium printed no DevTools URL in #{timeout} s:\n#{@stderr}" if left <= 0
      next unless io.wait_readable(left)
      raise "chromium exited before its DevTools URL:\n#{@stderr}" unless read_some(io)
    end
  end

  # False at the end of the stream (chromium exited).
  def read_some(io)
    @stderr << io.readpartial(65_536)
    true
  rescue EOFError
    false
  end

  def signal(name)
    Process.kill(name, -@pid)
  rescue Errno::ESRCH, Errno::EPERM
    nil
  end

  def wait(timeout)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      return true if Process.waitpid(@pid, Process::WNOHANG)
      return false if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05
    end
  rescue Errno::ECHILD
    true
  end
end
