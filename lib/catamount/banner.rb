# frozen_string_literal: true

module Catamount
  # The boot lines (as Puma prints them: tests and tools read them) and the process title.
  module Banner
    # `cluster`: `{ preload: bool }` for a cluster master, nil in single mode.
    def self.print(context, options, server, cluster: nil)
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
      log.call "Use Ctrl-C to stop"
      context.out.flush
      title("catamount #{VERSION} (#{server.listening.join(',')})", options)
    end

    # Sets the process title: `text`, then ` [tag]` (`tag`, else the directory's name).
    def self.title(text, options)
      tag = options[:tag] || File.basename(Dir.pwd)
      Process.setproctitle(tag.empty? ? text : "#{text} [#{tag}]")
    end
  end
end
