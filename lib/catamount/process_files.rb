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

    # YAML with the pid and where the server runs from.
    def self.write_state(options)
      return unless (path = options[:state])

      File.write(path, "---\npid: #{Process.pid}\nrunning_from: #{Dir.pwd.inspect}\n")
      File.chmod(options[:state_permission], path) if options[:state_permission]
    rescue SystemCallError => e
      raise UsageError, "cannot write state file #{path}: #{e.message.sub(/ @ .*/, '')}"
    end

    # Both, for a process about to serve (or to run a cluster).
    def self.write(options)
      write_pidfile(options[:pidfile])
      write_state(options)
    end

    # Runs the block (the server's life); however it ends, the UNIX socket files and the
    # pidfile go.
    def self.removed_after(server, options)
      yield
    ensure
      server.unlink_unix_sockets
      remove_pidfile(options[:pidfile])
    end
  end
end
