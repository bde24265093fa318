# frozen_string_literal: true

require "helper"
require "certificates"
require "smuggling_table"
require "table_test"

# Request smuggling, table-driven (rows in test/support/smuggling_table.rb): one row per
# vector, each sent as raw bytes over a real socket with a second request pipelined behind it.
# Every row gets exactly one answer with the status the row names, the connection closes after
# it (the pipelined request is never answered), and the app sees exactly the calls the row
# lists: none for a refused request, and nothing hidden in a body or a bad frame ever reaches
# it as a request of its own. The same rows go out whole, one byte per write, and over TLS.
class TestSmuggling < Minitest::Test
  include Support::ServerTest
  include Support::Certificates
  include Smuggling::Check
  include Support::TableTest
  parallelize_me!

  LIMIT = "http_content_length_limit 1000\n"

  def test_each_vector_is_refused_or_served_once_and_the_connection_closes
    server = start_with_config(LIMIT, app: "counting.ru")
    assert_rows(Smuggling::ROWS, "smuggling vectors (whole writes)") { |row| check_row(connect(server.port), server.port, row) }
  end

  # The verdict must not depend on how the bytes are split: every row again, one byte per
  # write (TCP_NODELAY), so the parser meets each row at every boundary a network could cut.
  def test_each_vector_sent_one_byte_per_write
    server = start_with_config(LIMIT, app: "counting.ru")
    assert_rows(Smuggling::ROWS, "smuggling vectors (one byte per write)") do |row|
      check_row(connect_nodelay(server.port), server.port, row, bytewise: true)
    end
  end

  # A TLS listener hands the parser the same bytes, decrypted: the same verdicts, whole and
  # one byte per TLS record.
  def test_each_vector_over_tls
    Dir.mktmpdir do |dir|
      certificates(dir)
      server = start_with_config("#{LIMIT}bind 'ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem'\n", app: "counting.ru")
      tls = server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i
      rows = Smuggling::ROWS.map { |row| [row, false] } + Smuggling::ROWS.map { |row| [row, true] }
      assert_rows(rows, "smuggling vectors (TLS: whole, then one byte per record)") do |row, bytewise|
        check_row(connect_tls(tls, dir), server.port, row, bytewise: bytewise)
      end
    end
  end
end
