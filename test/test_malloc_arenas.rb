# frozen_string_literal: true

require_relative "support/helper"

# The extension caps glibc's malloc arenas at two when it loads (crates/catamount-ext/src/malloc.rs):
# pool threads that run Ruby one at a time would otherwise each keep an arena of freed request
# bodies (docs/benchmarks.md, "Memory with large request bodies"). A number the user chose,
# through MALLOC_ARENA_MAX or GLIBC_TUNABLES, is left to glibc. The app counts the arenas with
# malloc_info(3) after five pool threads have each served a request at the same time.
class TestMallocArenas < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  THREADS = 5

  def arenas_after_busy_threads(server)
    clients = Array.new(THREADS) do
      Thread.new { get(server.port, "/together?n=#{THREADS}") }
    end
    responses = clients.map(&:value)
    assert_equal [[200, "together"]] * THREADS, responses.map { |r| [r.status, r.body] },
                 "#{THREADS} pool threads served requests at the same time"
    response = get(server.port, "/arenas")
    assert_equal 200, response.status
    Integer(response.body)
  end

  def test_arenas_are_capped_at_two_in_single_mode
    server = start_server("-t", "#{THREADS}:#{THREADS}", app: "malloc_arenas.ru")
    assert_operator arenas_after_busy_threads(server), :<=, 2
  end

  def test_a_cluster_worker_keeps_the_cap
    server = start_server("-w", "1", "-t", "#{THREADS}:#{THREADS}", app: "malloc_arenas.ru")
    assert_operator arenas_after_busy_threads(server), :<=, 2
  end

  def test_malloc_arena_max_chosen_by_the_user_is_left_to_glibc
    server = start_server("-t", "#{THREADS}:#{THREADS}", app: "malloc_arenas.ru", env: { "MALLOC_ARENA_MAX" => "8" })
    assert_operator arenas_after_busy_threads(server), :>, 2
  end

  def test_glibc_tunables_for_the_arenas_are_left_to_glibc
    server = start_server("-t", "#{THREADS}:#{THREADS}", app: "malloc_arenas.ru",
                          env: { "GLIBC_TUNABLES" => "glibc.malloc.arena_max=8" })
    assert_operator arenas_after_busy_threads(server), :>, 2
  end
end
