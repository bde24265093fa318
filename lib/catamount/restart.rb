# frozen_string_literal: true

require "rbconfig"

module Catamount
  # Hot restart (USR2): once the server has stopped serving, the process replaces itself with
  # a fresh run of the same command (`exec`, so the PID stays), handing over its listening
  # sockets. Connections that arrive meanwhile wait in the sockets' backlog and are served by
  # the new process, so none is refused.
  #
  # The hand-over follows Puma's convention, so either server can restart into the other:
  # `PUMA_INHERIT_<i>=<fd>:<bind url>` for each socket, its descriptor kept open across the
  # exec. systemd's socket activation (`LISTEN_FDS`, `LISTEN_PID`) is read the same way.
  #
  # Mixed into Launcher.
  module Restart
    # Environment variables that describe sockets handed to this process: consumed at boot,
    # never passed on as they were.
    HANDOVER_VARS = /\A(PUMA_INHERIT_\d+|LISTEN_FDS|LISTEN_PID|LISTEN_FDNAMES)\z/

    private

    # What the next process needs to be this one again: the environment as it was at start
    # and the command line (its script made absolute, since the restart may run elsewhere).
    def remember_command(argv)
      @boot_env = ENV.to_h.reject { |key, _| key.match?(HANDOVER_VARS) }
      @program = File.expand_path($PROGRAM_NAME)
      @original_argv = argv.dup
    end

    # `[[fd, url_or_nil], ...]`: the sockets the previous process handed over, read from the
    # environment and removed from it. Each descriptor is marked close-on-exec at once, so
    # nothing the app spawns while booting inherits it.
    def take_inherited_sockets
      list = ENV.keys.grep(/\APUMA_INHERIT_\d+\z/).sort_by { |k| k[/\d+/].to_i }.filter_map do |key|
        fd, url = ENV.delete(key).to_s.split(":", 2)
        next warn_bad_handover("#{key}=#{fd}:#{url}") unless fd.to_s.match?(/\A\d+\z/) && url

        [Integer(fd, 10), url]
      end
      if ENV["LISTEN_PID"].to_s == Process.pid.to_s
        count = ENV["LISTEN_FDS"].to_i
        list.concat((3...(3 + count)).map { |fd| [fd, nil] })
        %w[LISTEN_FDS LISTEN_PID LISTEN_FDNAMES].each { |k| ENV.delete(k) }
      end
      list.select { |fd, _| close_on_exec(fd) }
    end

    def warn_bad_handover(what)
      @err.puts "catamount: ignoring #{what}: not <fd>:<bind url>"
      nil
    end

    # False when `fd` is not open.
    def close_on_exec(fd)
      IO.for_fd(fd, autoclose: false).close_on_exec = true
      true
    rescue SystemCallError, ArgumentError
      @err.puts "catamount: ignoring inherited descriptor #{fd}: not open"
      false
    end

    # The command a hot restart runs: `restart_command` (split on spaces) followed by the
    # original arguments, else this same Ruby running this same script.
    def restart_argv(options)
      base = options[:restart_cmd] ? options[:restart_cmd].split : [RbConfig.ruby, @program]
      base + @original_argv
    end

    # Where the new process starts: `directory` if set, else the directory this one started
    # in, by its `$PWD` name when that is the same directory (a `current` symlink is then
    # followed afresh, so a new release is picked up).
    def restart_directory(options)
      return options[:directory] if options[:directory]

      pwd = @boot_env["PWD"]
      pwd && File.identical?(pwd, Dir.pwd) ? pwd : Dir.pwd
    end

    # Replaces this process with the new one. Returns only if that cannot be done, with the
    # exit status to end with.
    def exec_restart(options, server)
      @config.run_hooks(:before_restart, self, log: @err)
      fds = server.restart_fds
      env = @boot_env.dup
      fds.each_with_index { |(fd, url), i| env["PUMA_INHERIT_#{i}"] = "#{fd}:#{url}" }
      argv = restart_argv(options)
      dir = restart_directory(options)
      debug "restarting: #{argv.join(' ')} (in #{dir})"
      @out.flush
      @err.flush
      # `fd => fd` keeps each socket open across the exec (Ruby clears its close-on-exec flag).
      Process.exec(env, *argv, fds.to_h { |fd, _| [fd, fd] }.merge(chdir: dir, unsetenv_others: true))
    rescue SystemCallError => e
      # The caller's cleanup (socket files, pidfile) runs as after any stop.
      @err.puts "catamount: hot restart failed: cannot run #{argv&.first}: #{e.message.sub(/ @ .*/, '')}"
      Launcher::FAILED
    end
  end

  class Launcher
    include Restart
  end
end
