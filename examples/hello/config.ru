# frozen_string_literal: true

# The smallest Rack app: `make run` serves it on http://127.0.0.1:9292.
run ->(_env) { [200, { "content-type" => "text/plain" }, ["Hello from Catamount\n"]] }
