# frozen_string_literal: true

module Catamount
  # The files a running server leaves for others: the pidfile and the state file `pumactl -S`
  # reads (and the removal of those and of its UNIX socket files at the end). Written before the boot lines, so one that cannot be written stops the boot cleanly.
  module ProcessFiles
    def self.write_pidfile(path)
      File.write(path, "#{Process.pid}\n") if path
    rescue SystemCallError => e
      raise UsageError, "cannot write pidfile #{path}: #{e.message.sub(/ @ .*/, '')}"
    end

    # Removed only while it still names this process (a newer server may have taken it over).
    def self.remove_pidfile(path)
      File.delete(path) if path && File.exist?(path) && File.read(path).to_i == Process.pid
    rescue SystemCallError
      nil
    end

    # Puma's state file: YAML with the pid, the control server's URL and token (when there is
    # one: `pumactl -S` reads them), and where the server runs from.
    def self.write_state(options, control = nil)
      return unless (path = options[:state])

      lines = ["---", "pid: #{Process.pid}"]
      lines << "control_url: #{control.control_url}" if control&.control_url
      lines << "control_auth_token: #{control.control_token}" if control&.control_token
      lines << "running_from: #{Dir.pwd.inspect}"
      # The token is a secret: without `state_permission`, a file holding one is the owner's
      # alone (Puma leaves it to the umask). The mode is set before the text is written.
      mode = options[:state_permission] || (0o600 if control&.control_token)
      File.open(path, File::WRONLY | File::CREAT | File::TRUNC, mode || 0o666) do |file|
        file.chmod(mode) if mode
        file.write("#{lines.join("\n")}\n")
      end
    rescue SystemCallError => e
      raise UsageError, "cannot write state file #{path}: #{e.message.sub(/ @ .*/, '')}"
    end

    # Both, for a process about to serve (or to run a cluster).
    def self.write(options, control = nil)
      write_pidfile(options[:pidfile])
      write_state(options, control)
    end

    # Runs the block (the server's life); however it ends, the UNIX socket files (the control
    # server's too) and the pidfile go.
    def self.removed_after(server, options, control = nil)
      yield
    ensure
      control&.close
      server.unlink_unix_sockets
      remove_pidfile(options[:pidfile])
    end
  end
end
