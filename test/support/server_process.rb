# frozen_string_literal: true

# A Catamount process started for a test, with its output captured and every wait bounded.
class ServerProcess
  BIN = File.expand_path("../../bin/catamount", __dir__)

  attr_reader :pid, :port

  # `command` replaces `ruby bin/catamount` (e.g. `bundle exec catamount`); `redirects` adds
  # descriptors for the child (`{ 3 => socket }`).
  def initialize(args, env: {}, chdir: nil, command: [RbConfig.ruby, BIN], redirects: {})
    out_r, out_w = IO.pipe
    err_r, err_w = IO.pipe
    @pid = Process.spawn(env, *command, *args, { out: out_w, err: err_w, chdir: chdir || Dir.pwd }.merge(redirects))
    out_w.close
    err_w.close
    @lock = Mutex.new
    @stdout = +""
    @stderr = +""
    @readers = [[out_r, @stdout], [err_r, @stderr]].map do |io, buffer|
      Thread.new do
        loop do
          chunk = io.readpartial(65_536)
          @lock.synchronize { buffer << chunk }
        end
      rescue EOFError, IOError
        nil
      end
    end
    @status = nil
  end

  def stdout
    @lock.synchronize { @stdout.dup }
  end

  def stderr
    @lock.synchronize { @stderr.dup }
  end

  # Waits until stdout (or stderr) matches; fails the test with the output if it does not.
  def wait_for(pattern, stream: :stdout, timeout: 15)
    deadline = now + timeout
    loop do
      text = stream == :stdout ? stdout : stderr
      match = text.match(pattern)
      return match if match
      raise "timed out waiting for #{pattern.inspect} on #{stream}\n--- stdout\n#{stdout}\n--- stderr\n#{stderr}" if now > deadline
      if exited?
        @readers.each { |t| t.join(2) } # the output the process left before it ended
        text = stream == :stdout ? stdout : stderr
        match = text.match(pattern)
        return match if match

        raise "server exited (#{@status.inspect}) before #{pattern.inspect}\n--- stdout\n#{stdout}\n--- stderr\n#{stderr}"
      end

      sleep 0.02
    end
  end

  def boot!(timeout: 20)
    wait_for(/Use Ctrl-C to stop/, timeout: timeout)
    @port = stdout[%r{Listening on http://(?:127\.0\.0\.1|\[::1\]):(\d+)}, 1]&.to_i
    self
  end

  def signal(name)
    Process.kill(name, @pid)
  end

  # Waits for the process to end; returns its Process::Status.
  def wait_exit(timeout: 15)
    deadline = now + timeout
    until exited?
      raise "server did not exit within #{timeout}s\n--- stdout\n#{stdout}\n--- stderr\n#{stderr}\n--- threads\n#{threads}" if now > deadline

      sleep 0.02
    end
    @readers.each { |t| t.join(2) }
    @status
  end

  # Each thread of the process as "name state wchan" (from /proc), to show where a process
  # that does not end is stuck.
  def threads
    Dir.glob("/proc/#{@pid}/task/*").map do |task|
      name = File.read("#{task}/comm").strip
      state = File.read("#{task}/stat")[/\) (\w)/, 1]
      "#{File.basename(task)} #{name} #{state} #{File.read("#{task}/wchan")}"
    rescue SystemCallError
      nil
    end.compact.join("\n")
  end

  def exited?
    return true if @status

    _, status = Process.waitpid2(@pid, Process::WNOHANG)
    @status = status if status
    !@status.nil?
  end

  def kill
    return if exited?

    Process.kill("KILL", @pid)
    wait_exit(timeout: 5)
  rescue Errno::ESRCH
    nil
  end

  private

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end
