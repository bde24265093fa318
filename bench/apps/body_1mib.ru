# frozen_string_literal: true

# A 1 MiB body built once: the cost of writing a large String response.
BODY = ["x" * (1 << 20)].freeze
run ->(_env) { [200, { "content-type" => "application/octet-stream" }, BODY] }
