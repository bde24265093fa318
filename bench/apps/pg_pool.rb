# frozen_string_literal: true

# The PostgreSQL apps' connections (pg_sleep.ru, pg_lookup.ru): a pool that opens a connection
# only when a request finds none idle, up to `size`, so there are never more connections than
# requests in flight at once. Under threads that is one per busy thread (`-t 5:5`: at most 5
# per process, as a per-thread connection would give); under a fiber mode, where each request
# runs in its own fiber, a per-thread or fiber-local connection would be wrong both ways (one
# shared by every fiber of a thread, or one opened per request), while this gives one per request
# in flight and makes the rest wait in the queue (fiber-scheduler aware). The servers find the
# database through libpq's environment (PGHOST, PGUSER, PGDATABASE: bench/lib/postgres.rb).
require "pg"

class BenchPgPool
  def initialize(size = Integer(ENV.fetch("BENCH_PG_POOL", "100")))
    @size = size
    @idle = Thread::Queue.new
    @opened = 0
    @lock = Thread::Mutex.new
  end

  # Yields a connection of its own to the block; a connection that raised is closed, not reused.
  def with
    conn = checkout
    begin
      yield conn
    rescue PG::Error
      discard(conn)
      conn = nil
      raise
    ensure
      @idle.push(conn) if conn
    end
  end

  private

  def checkout
    @idle.pop(true)
  rescue ThreadError # none idle: open one if under the cap, else wait for one
    @lock.synchronize { @opened < @size && (@opened += 1) } ? connect : @idle.pop
  end

  def connect
    PG.connect(connect_timeout: 5)
  rescue StandardError
    @lock.synchronize { @opened -= 1 }
    raise
  end

  def discard(conn)
    conn.close
  ensure
    @lock.synchronize { @opened -= 1 }
  end
end
