# frozen_string_literal: true

# Requests that show how queued requests are handed to the pool's threads (test_thread_handoff).

# How many requests are inside the app right now, and the most there ever were.
IN_APP = { lock: Mutex.new, now: 0, most: 0 }
RELEASED = { flag: false, spinning: false }

def now
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def param(env, name, default)
  env["QUERY_STRING"].split("&").to_h { |pair| pair.split("=", 2) }.fetch(name, default)
end

def inside
  IN_APP[:lock].synchronize do
    IN_APP[:now] += 1
    IN_APP[:most] = IN_APP[:now] if IN_APP[:now] > IN_APP[:most]
  end
  yield
ensure
  IN_APP[:lock].synchronize { IN_APP[:now] -= 1 }
end

ROUTES = {
  # Runs Ruby for `ms` milliseconds, releasing the GVL for a moment a few thousand times, as an
  # app that stats files (templates, public folders) does.
  "/stat_loop" => lambda do |env|
    inside do
      until_time = now + (param(env, "ms", "30").to_f / 1000)
      File.exist?("/nonexistent/handoff") while now < until_time
    end
    [200, {}, ["done"]]
  end,
  # The most there were; with ?reset=1 it starts counting again from the requests inside now.
  "/most_in_app" => lambda do |env|
    most = IN_APP[:lock].synchronize do
      seen = IN_APP[:most]
      IN_APP[:most] = IN_APP[:now] if param(env, "reset", "0") == "1"
      seen
    end
    [200, {}, [most.to_s]]
  end,
  # Runs Ruby without a pause until /release is served (or `t` seconds pass).
  "/spin_until_released" => lambda do |env|
    deadline = now + param(env, "t", "10").to_f
    RELEASED[:spinning] = true
    nil until RELEASED[:flag] || now > deadline
    [200, {}, [RELEASED[:flag] ? "released" : "timeout"]]
  end,
  # Releases the spinner, if it is spinning yet.
  "/release" => lambda do |_env|
    next [200, {}, ["not spinning yet"]] unless RELEASED[:spinning]

    RELEASED[:flag] = true
    [200, {}, ["released"]]
  end,
  "/die" => ->(_env) { Thread.current.kill },
  "/" => ->(_env) { [200, {}, ["hello"]] }
}.freeze

run(lambda do |env|
  route = ROUTES[env["PATH_INFO"]]
  route ? route.call(env) : [404, {}, ["not found"]]
end)
