# frozen_string_literal: true

# IO-bound on a real database: one query that takes 20 ms on the server (`pg_sleep(0.02)`), the
# wait on its socket (ruby-pg's async API: the GVL released, a fiber scheduler's io_wait used).
require_relative "pg_pool"

pool = BenchPgPool.new
run(lambda do |_env|
  pool.with { |conn| conn.exec("SELECT pg_sleep(0.02)") }
  [200, { "content-type" => "text/plain" }, ["slept in postgres\n"]]
end)
