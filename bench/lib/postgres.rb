# frozen_string_literal: true

require "fileutils"
require "etc"
require "tmpdir"
require_relative "child"

module Bench
  # The bench's own PostgreSQL (Debian's): a cluster made with initdb in a temp dir, listening on
  # a UNIX socket in that dir only (no TCP), the lookup table loaded once, stopped (by PID) and
  # removed after. Run as root, it runs as the `postgres` user (the postmaster refuses root).
  # The servers under test reach it through libpq's environment (#env).
  class Postgres
    include Child
    BIN_DIRS = Dir.glob("/usr/lib/postgresql/*/bin").sort_by { |d| d[%r{/(\d+)/bin\z}, 1].to_i }.reverse.freeze
    # What the lookup app reads: an indexed (primary key) table of 100,000 rows.
    ROWS = 100_000
    BOOT_SECONDS = 60
    STOP_SECONDS = 30

    attr_reader :dir, :log

    # A started cluster, or the reason it could not start (a String) after cleaning up.
    def self.start
      pg = new
      pg.start
      pg
    rescue StandardError => e
      pg&.stop
      "PostgreSQL did not start: #{e.message.lines.first&.strip}"
    end

    def initialize
      bin = BIN_DIRS.find { |d| File.executable?(File.join(d, "postgres")) }
      raise "postgresql is not installed (script/bootstrap bench installs it)" unless bin

      @bin = bin
      @dir = Dir.mktmpdir("catamount-bench-pg")
      @log = File.join(@dir, "postgres.log")
    end

    def start
      require "pg" # Debian's ruby-pg; the apps need it too
      as_postgres_owner
      initdb
      @pid = Process.spawn(*drop_root, File.join(@bin, "postgres"), "-D", data, "-k", @dir, "-c", "listen_addresses=",
                           # Throwaway data: no fsync; enough connections for two workers' pools.
                           "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                           "-c", "max_connections=300", out: @log, err: @log, pgroup: true)
      wait_ready
      load_table
      self
    end

    # libpq's environment for the apps: the socket dir, the superuser initdb made, its database.
    def env
      { "PGHOST" => @dir, "PGUSER" => "bench", "PGDATABASE" => "postgres" }
    end

    # Fast shutdown (SIGINT: clients disconnected), KILL after STOP_SECONDS; then the dir goes.
    def stop
      stop_child("INT", STOP_SECONDS) if @pid
    ensure
      FileUtils.rm_rf(@dir) if @dir
    end

    private

    def data
      File.join(@dir, "data")
    end

    def root?
      Process.uid.zero?
    end

    # As root, the temp dir (socket and data) belongs to `postgres`; root itself reaches it anyway.
    def as_postgres_owner
      return unless root?

      user = Etc.getpwnam("postgres")
      File.chown(user.uid, user.gid, @dir)
      File.chown(user.uid, user.gid, @log) if File.exist?(@log)
    rescue ArgumentError
      raise "the postgres user does not exist (script/bootstrap bench installs postgresql)"
    end

    # setpriv execs in place (the PID stays postgres' own, so it can be signalled), unlike runuser.
    def drop_root
      root? ? %w[setpriv --reuid=postgres --regid=postgres --init-groups --] : []
    end

    def initdb
      ok = system(*drop_root, File.join(@bin, "initdb"), "-D", data, "--auth=trust", "--username=bench", "-E", "UTF8",
                  "--no-sync", "--no-instructions", out: @log, err: @log)
      raise "initdb failed; log #{@log}:\n#{tail}" unless ok
    end

    def wait_ready
      deadline = now + BOOT_SECONDS
      loop do
        raise "postgres exited while starting; log #{@log}:\n#{tail}" if exited?
        return if connect_once
        raise "postgres did not accept connections within #{BOOT_SECONDS}s; log #{@log}" if now > deadline

        sleep 0.1
      end
    end

    def connect_once
      conn = PG.connect(host: @dir, user: "bench", dbname: "postgres", connect_timeout: 2)
      true
    rescue PG::Error
      false
    ensure
      conn&.close
    end

    def load_table
      conn = PG.connect(host: @dir, user: "bench", dbname: "postgres", connect_timeout: 5)
      conn.exec(<<~SQL)
        SET client_min_messages = warning;
        CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, price numeric(10, 2) NOT NULL,
                            stock integer NOT NULL, updated_at timestamptz NOT NULL);
        INSERT INTO items
          SELECT g, 'item ' || g, (g % 1000) / 10.0 + 0.99, g % 500, timestamptz '2026-01-01' + g * interval '1 minute'
          FROM generate_series(1, #{ROWS}) AS g;
        ANALYZE items;
      SQL
    ensure
      conn&.close
    end

    def tail
      File.exist?(@log) ? File.read(@log)[-2000..] || File.read(@log) : ""
    end
  end
end
