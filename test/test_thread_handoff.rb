# frozen_string_literal: true

require "helper"

# How queued requests reach the pool's threads. By default (CATAMOUNT_THREAD_HANDOFF=gvl) a
# second thread takes a request only once it could run it: the serving threads are all blocked,
# or all on long requests. `eager` hands every request to an idle thread at once, as Puma does.
class TestThreadHandoff < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  EAGER = { "CATAMOUNT_THREAD_HANDOFF" => "eager" }.freeze

  # Writes every request before reading any answer, so they all wait in the queue together.
  def burst(port, path, count)
    socks = Array.new(count) { connect(port) }
    socks.each { |s| s.write("GET #{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") }
    socks.map { |s| read_response(s, timeout: 20).body }
  ensure
    socks&.each(&:close)
  end

  def test_requests_that_wait_for_each_other_all_get_a_thread
    server = start_server("-t", "5:5")
    threads = Array.new(5) { Thread.new { get(server.port, "/barrier?n=5").body } }
    assert_equal %w[met] * 5, threads.map(&:value)
  end

  # Usually one thread serves all five. A loaded machine (the other tests of this file run
  # alongside) can make a burst look otherwise: a look can catch both serving threads between
  # GVL holders and see them asleep, and a request still running after 50 ms of wall time
  # (LONG_REQUEST) is joined by design, so the requests are short (10 ms of Ruby) and the
  # fewest of up to three bursts counts. Eager hand-off puts all five in the app at once in
  # every burst (one CI run saw a single burst reach 5 under load).
  def test_threads_busy_running_ruby_are_not_joined_by_threads_that_would_only_wait_for_the_gvl
    server = start_server("-t", "5:5", app: "handoff.ru")
    seen = []
    3.times do
      assert_equal %w[done] * 5, burst(server.port, "/stat_loop?ms=10", 5)
      seen << get(server.port, "/most_in_app?reset=1").body.to_i
      break if seen.last <= 3
    end
    assert_operator seen.min, :<=, 3, "most requests inside the app at once, per burst: #{seen}"
  end

  def test_eager_hand_off_runs_every_request_at_once_as_puma_does
    server = start_server("-t", "5:5", app: "handoff.ru", env: EAGER)
    assert_equal %w[done] * 5, burst(server.port, "/stat_loop?ms=30", 5)
    assert_operator get(server.port, "/most_in_app").body.to_i, :>=, 3
    threads = Array.new(5) { Thread.new { get(server.port, "/barrier?n=5").body } }
    assert_equal %w[not\ found] * 5, threads.map(&:value), "handoff.ru has no barrier"
  end

  def test_a_long_request_does_not_hold_up_a_short_one
    server = start_server("-t", "2:2", app: "handoff.ru")
    spinner = Thread.new { get(server.port, "/spin_until_released?t=10").body }
    # The short request is served while the spinner runs (if it came first, try again).
    released = wait_until(timeout: 15) { get(server.port, "/release?if=spinning").body == "released" }
    assert released, "the short request never ran while the long one did"
    assert_equal "released", spinner.value
  end

  def test_a_thread_killed_while_serving_leaves_the_pool_serving
    server = start_server("-t", "2:2", app: "handoff.ru")
    sock = connect(server.port)
    sock.write("GET /die HTTP/1.1\r\nHost: x\r\n\r\n")
    response = read_response(sock)
    assert_equal 500, response.status, "a killed thread's request is answered"
    assert_equal "close", response["connection"]
    assert wait_until { server.stderr.include?(%(("GET /die" - (127.0.0.1)): left by a non-local exit (Thread#kill, throw); answering 500)) }, server.stderr
    3.times do
      assert_equal %w[done] * 4, burst(server.port, "/stat_loop?ms=5", 4)
    end
  end

  def test_an_unknown_hand_off_is_a_boot_error_naming_the_variable
    server = launch(["-b", "tcp://127.0.0.1:0", File.join(Support::APPS, "handoff.ru")],
                    env: { "CATAMOUNT_THREAD_HANDOFF" => "lazy" })
    refute server.wait_exit.success?
    assert_includes server.stderr, 'CATAMOUNT_THREAD_HANDOFF="lazy" is not "gvl" or "eager"'
  end
end
