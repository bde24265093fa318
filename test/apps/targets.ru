# frozen_string_literal: true

require "json"

# Answers, for any method and target, the env keys the request target and Host make (JSON):
# test/test_request_targets.rb's table reads them.
KEYS = %w[
  REQUEST_METHOD REQUEST_URI REQUEST_PATH PATH_INFO QUERY_STRING FRAGMENT SERVER_NAME SERVER_PORT
  HTTP_HOST rack.url_scheme
].freeze

run(lambda do |env|
  info = KEYS.to_h { |k| [k, env[k]] }
  info["has_fragment"] = env.key?("FRAGMENT")
  [200, { "content-type" => "application/json" }, [JSON.generate(info)]]
end)
