# frozen_string_literal: true

# Writes the raw requests of the smuggling table (test/support/smuggling_table.rb) to stdout,
# each as a 4-byte little-endian length and the bytes, with and without the request the table
# pipelines behind them: the seeds of the differential parser check
# (test/support/parser_differential.py).
require_relative "smuggling_table"

$stdout.binmode
Smuggling::ROWS.each do |row|
  [row[1], row[1] + Smuggling::PIPELINED].each do |raw|
    bytes = raw.b
    $stdout.write([bytes.bytesize].pack("V"), bytes)
  end
end
