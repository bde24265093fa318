# frozen_string_literal: true

require "helper"
require "certificates"
require "smuggling_table"

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
  parallelize_me!

  def test_each_vector_is_refused_or_served_once_and_the_connection_closes
    with_server do |server|
      failures = Smuggling::ROWS.filter_map { |row| check_row(connect(server.port), server.port, row) }
      assert_empty failures, failures.join("\n")
    end
    puts "\n#{Smuggling::ROWS.size} smuggling vectors tried (whole writes)"
  end

  # The verdict must not depend on how the bytes are split: every row again, one byte per
  # write (TCP_NODELAY), so the parser meets each row at every boundary a network could cut.
  def test_each_vector_sent_one_byte_per_write
    with_server do |server|
      failures = Smuggling::ROWS.filter_map do |row|
        check_row(connect_nodelay(server.port), server.port, row, bytewise: true)
      end
      assert_empty failures, failures.join("\n")
    end
    puts "\n#{Smuggling::ROWS.size} smuggling vectors tried (one byte per write)"
  end

  # A TLS listener hands the parser the same bytes, decrypted: the same verdicts, whole and
  # one byte per TLS record.
  def test_each_vector_over_tls
    Dir.mktmpdir do |dir|
      certificates(dir)
      with_server("bind 'ssl://127.0.0.1:0?cert=#{dir}/cert.pem&key=#{dir}/key.pem'\n") do |server|
        tls = server.stdout[%r{Listening on ssl://127\.0\.0\.1:(\d+)}, 1].to_i
        failures = [false, true].flat_map do |bytewise|
          Smuggling::ROWS.filter_map { |row| check_row(connect_tls(tls, dir), server.port, row, bytewise: bytewise) }
        end
        assert_empty failures, failures.join("\n")
      end
    end
    puts "\n#{Smuggling::ROWS.size * 2} smuggling vectors tried (TLS: whole, then one byte per record)"
  end

  private

  # A counting.ru server with a 1000-byte body limit, a plain bind (for GET /calls) and `more`.
  def with_server(more = "")
    dir = Dir.mktmpdir
    config = File.join(dir, "puma.rb")
    File.write(config, "http_content_length_limit 1000\nbind 'tcp://127.0.0.1:0'\n#{more}")
    yield start_server("-C", config, app: "counting.ru")
  ensure
    FileUtils.rm_rf(dir) if dir
  end
end
