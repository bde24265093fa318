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
  # One object per boot (`context.restart`): it remembers what the next process needs (the
  # environment and the command line at start), reads the sockets handed to this one, and
  # carries out a hot restart or `prune_bundler`'s re-exec.
  class Restart
    # Environment variables that describe sockets handed to this process: consumed at boot,
    # never passed on as they were.
    HANDOVER_VARS = /\A(PUMA_INHERIT_\d+|LISTEN_FDS|LISTEN_PID|LISTEN_FDNAMES)\z/

    # Catamount's own executable: what a pruned master runs (not the command it was started
    # with, which may be a Bundler binstub that would load Bundler again).
    OWN_EXE = File.expand_path("../../exe/catamount", __dir__)

    # The environment as it was at start, without the hand-over variables.
    attr_reader :boot_env
    # A whole command line to run again instead of this script (a Rack handler's process).
    attr_writer :whole_command

    # What the next process needs to be this one again: the environment as it was at start
    # and the command line (its script made absolute, since the restart may run elsewhere).
    def initialize(context, argv)
      @context = context
      @boot_env = ENV.to_h.reject { |key, _| key.match?(HANDOVER_VARS) }
      @program = File.expand_path($PROGRAM_NAME)
      @original_argv = argv.dup
      @whole_command = nil
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
      if systemd_sockets_for_me?
        count = ENV["LISTEN_FDS"].to_i
        list.concat((3...(3 + count)).map { |fd| [fd, nil] })
        %w[LISTEN_FDS LISTEN_PID LISTEN_FDNAMES].each { |k| ENV.delete(k) }
      end
      list.select { |fd, _| close_on_exec(fd) }
    end

    # systemd's LISTEN_FDS are for the process LISTEN_PID names: this one (systemd started it,
    # or a hot restart exec'd into it), or its parent when this is the fresh worker 0 a
    # phased restart spawned (the master cannot know the child's PID before the spawn).
    def systemd_sockets_for_me?
      pid = ENV["LISTEN_PID"].to_s
      pid == Process.pid.to_s || (ENV.key?(Cluster::Pipes::FRESH_WORKER_VAR) && pid == Process.ppid.to_s)
    end

    def warn_bad_handover(what)
      @context.error "catamount: ignoring #{what}: not <fd>:<bind url>"
      nil
    end

    # False when `fd` is not open.
    def close_on_exec(fd)
      IO.for_fd(fd, autoclose: false).close_on_exec = true
      true
    rescue SystemCallError, ArgumentError
      @context.error "catamount: ignoring inherited descriptor #{fd}: not open"
      false
    end

    # The command a hot restart runs: `restart_command` (split on spaces) followed by the
    # original arguments, else this same Ruby running this same script (a pruned master: its
    # load path and Catamount's own executable, as `prune_bundler` ran it; a process a Rack
    # handler booted: the whole command that started it).
    def restart_argv(options)
      return options[:restart_cmd].split + @original_argv if options[:restart_cmd]

      return [RbConfig.ruby, "-I", pruned_load_path(options), OWN_EXE, *@original_argv] if @boot_env.key?("PUMA_BUNDLER_PRUNED")
      return @whole_command if @whole_command

      [RbConfig.ruby, @program, *@original_argv]
    end

    # Where the new process starts: `directory` if set, else the directory this one started
    # in, by its `$PWD` name when that is the same directory (a `current` symlink is then
    # followed afresh, so a new release is picked up).
    def restart_directory(options)
      return options[:directory] if options[:directory]

      pwd = @boot_env["PWD"]
      pwd && File.identical?(pwd, Dir.pwd) ? pwd : Dir.pwd
    end

    # `prune_bundler` (cluster mode without preload): started under Bundler (`bundle exec`),
    # the master runs itself again outside it, so only the workers load the app's bundle (each
    # phased restart then picks up a changed Gemfile) and the master holds none of its gems.
    # The new run sees Bundler's original environment plus PUMA_BUNDLER_PRUNED=1, and only
    # Catamount's, Rack's and `extra_runtime_dependencies`' load paths. Returns when there is
    # nothing to prune, or when the exec failed (the boot then goes on under Bundler).
    def prune_bundler(options)
      return if ENV.key?("PUMA_BUNDLER_PRUNED") || !defined?(::Bundler)

      paths = pruned_load_path(options, warn: true)
      @context.log "* Pruning Bundler environment"
      env = unbundled_env.merge(::Bundler.original_env.select { |k, v| k.start_with?("BUNDLE_") && v })
      env["GEM_HOME"] = ENV["GEM_HOME"] if ENV["GEM_HOME"]
      env["PUMA_BUNDLER_PRUNED"] = "1"
      redirects = hand_over(env, @context.inherited)
      argv = [RbConfig.ruby, "-I", paths, OWN_EXE, *@original_argv]
      @context.debug "pruned: #{argv.join(' ')}"
      flush
      Process.exec(env, *argv, redirects.merge(unsetenv_others: true))
    rescue SystemCallError => e
      @context.error "catamount: could not prune the Bundler environment, going on under it: #{e.message}"
    end

    # The load path a pruned master runs with (given to `-I`, again at each hot restart):
    # Catamount's own, Rack's, and that of every `extra_runtime_dependencies` gem.
    def pruned_load_path(options, warn: false)
      paths = [File.expand_path("..", __dir__)] + require_paths("rack")
      options[:extra_runtime_dependencies].each do |name|
        found = require_paths(name)
        @context.log "* Could not load extra dependency: #{name}" if found.empty? && warn
        paths.concat(found)
      end
      paths.uniq.join(File::PATH_SEPARATOR)
    end

    def unbundled_env
      ::Bundler.respond_to?(:unbundled_env) ? ::Bundler.unbundled_env : ::Bundler.clean_env
    end

    # Where a gem's files are loaded from: its loaded spec, else the load path entry that has
    # `<name>.rb` (a library installed outside of gems, as Debian's are).
    def require_paths(name)
      spec = Gem.loaded_specs[name]
      return spec.full_require_paths if spec

      $LOAD_PATH.select { |dir| File.file?(File.join(dir.to_s, "#{name}.rb")) }.first(1)
    end

    # Puts `sockets` (`[[fd, bind_url_or_nil], ...]`) into `env` for the next process: systemd's
    # (no URL) as LISTEN_FDS for this same PID, at descriptors 3, 4, ... as that protocol
    # requires; those with a URL as PUMA_INHERIT_n at their own descriptors. Returns the
    # redirections for the exec or spawn (`{child_fd => this_fd}`). No other descriptor handed
    # on can be among 3, 4, ...: when this process has activated sockets, it got them there,
    # and its listeners still hold those numbers (what it hands on are copies).
    def hand_over(env, sockets)
      activated, named = sockets.partition { |_, url| url.nil? }
      unless activated.empty?
        env["LISTEN_FDS"] = activated.size.to_s
        env["LISTEN_PID"] = Process.pid.to_s
      end
      named.each_with_index { |(fd, url), i| env["PUMA_INHERIT_#{i}"] = "#{fd}:#{url}" }
      activated.each_with_index.to_h { |(fd, _), i| [3 + i, fd] }.merge(named.to_h { |fd, _| [fd, fd] })
    end

    # Replaces this process with the new one. Returns only if that cannot be done, with the
    # exit status to end with.
    # `control`: the control server (its answer to /restart goes out, its socket file goes).
    def exec(options, server, control = nil)
      @context.run_hooks(:before_restart, @context.launcher)
      if control
        control.flush
        control.close
      end
      env = @boot_env.dup
      redirects = hand_over(env, server.restart_fds)
      argv = restart_argv(options)
      dir = restart_directory(options)
      @context.debug "restarting: #{argv.join(' ')} (in #{dir})"
      flush
      # Each socket stays open across the exec at the descriptor `hand_over` chose (Ruby makes
      # the copies and clears their close-on-exec flag).
      Process.exec(env, *argv, redirects.merge(chdir: dir, unsetenv_others: true))
    rescue SystemCallError => e
      # The caller's cleanup (socket files, pidfile) runs as after any stop.
      @context.error "catamount: hot restart failed: cannot run #{argv&.first}: #{e.message.sub(/ @ .*/, '')}"
      Launcher::FAILED
    end

    def flush
      Native.log_flush(Context::LOG_FLUSH_SECONDS)
      @context.out.flush
      @context.err.flush
    end

    private :systemd_sockets_for_me?, :warn_bad_handover, :close_on_exec, :pruned_load_path, :unbundled_env, :require_paths, :flush
  end
end
