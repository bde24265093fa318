# frozen_string_literal: true

# Counts what reaches the app: every call is logged as "METHOD REQUEST_URI body-bytesize" and
# answered "seen REQUEST_URI"; GET /calls answers the log since the last /calls (one line per
# call) and empties it. The smuggling tests use it to see that a refused request, or bytes
# hidden in one, never reached the app, and (behind nginx) that each answer is its own.
CALLS = { lock: Mutex.new, log: [] }

run(lambda do |env|
  if env["REQUEST_METHOD"] == "GET" && env["PATH_INFO"] == "/calls"
    log = CALLS[:lock].synchronize { CALLS[:log].slice!(0..) }
    next [200, { "content-type" => "text/plain" }, [log.map { |c| "#{c}\n" }.join]]
  end

  body = env["rack.input"].read
  CALLS[:lock].synchronize { CALLS[:log] << "#{env['REQUEST_METHOD']} #{env['REQUEST_URI']} #{body.bytesize}" }
  [200, { "content-type" => "text/plain" }, ["seen #{env['REQUEST_URI']}"]]
end)
