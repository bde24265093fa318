# frozen_string_literal: true

# A realistic database request: a random row of a 100,000-row table looked up by its indexed
# primary key and rendered as JSON (the table: bench/lib/postgres.rb).
require "json"
require_relative "pg_pool"

pool = BenchPgPool.new
query = "SELECT id, name, price, stock, updated_at FROM items WHERE id = $1"
run(lambda do |_env|
  row = pool.with { |conn| conn.exec_params(query, [rand(1..100_000)]).first }
  next [404, { "content-type" => "text/plain" }, ["no such item\n"]] unless row

  item = { id: Integer(row["id"]), name: row["name"], price: row["price"], stock: Integer(row["stock"]),
           updated_at: row["updated_at"] }
  [200, { "content-type" => "application/json" }, [JSON.generate(item)]]
end)
