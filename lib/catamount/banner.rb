# frozen_string_literal: true

module Catamount
  # The boot lines (as Puma prints them: tests and tools read them) and the process title.
  module Banner
    # `cluster`: `{ preload: bool }` for a cluster master, nil in single mode.
    # `control`: the control server and metrics listener (Control), if any.
    def self.print(context, options, server, cluster: nil, control: nil)
      log = context.method(:log)
      log.call "Catamount starting in #{cluster ? 'cluster' : 'single'} mode..."
      log.call "* Catamount version: #{VERSION} (\"#{CODENAME}\")"
      log.call "* Ruby version: #{RUBY_DESCRIPTION}"
      log.call "*  Min threads: #{options[:min_threads]}"
      log.call "*  Max threads: #{options[:max_threads]}"
      log.call "*  Environment: #{options[:environment]}"
      if cluster
        log.call "*   Master PID: #{Process.pid}"
        log.call "*      Workers: #{options[:workers]}"
        log.call "*     Preload: #{cluster[:preload] ? 'yes' : 'no'}"
        mark = ->(yes) { yes ? "\u2714" : "\u2716" }
        log.call "*    Restarts: (#{mark[true]}) hot (#{mark[true]}) phased (#{mark[options[:fork_worker]]}) refork"
      else
        log.call "*          PID: #{Process.pid}"
      end
      inherited = server.inherited
      server.listening.each { |l| log.call "* Listening on #{l}#{' (inherited)' if inherited.include?(l)}" }
      control&.announce
      log.call "Use Ctrl-C to stop"
      context.out.flush
      title("catamount #{VERSION} (#{server.listening.join(',')})", options) unless cluster
    end

    # A cluster master's title: what `ps` shows of the cluster (its phase, booted workers).
    def self.master_title(server, table, options)
      title("catamount #{VERSION} master (#{server.listening.join(',')}) phase #{table.phase}, " \
            "#{table.booted_count}/#{table.count} workers booted", options)
    end

    # A worker's: Puma's, with the phase it was started in.
    def self.worker_title(index, master_pid, phase, options)
      title("catamount: cluster worker #{index}: #{master_pid} phase #{phase}", options)
    end

    # Sets the process title: `text`, then ` [tag]` (`tag`, else the directory's name); only
    # when it changed (the master asks after every check-in).
    def self.title(text, options)
      tag = options[:tag] || File.basename(Dir.pwd)
      text = "#{text} [#{tag}]" unless tag.empty?
      return if @title == text

      @title = text
      Process.setproctitle(text)
    end
  end
end
