# frozen_string_literal: true

# Hello world: the server's own overhead per request, nothing else.
BODY = ["Hello World\n"].freeze
run ->(_env) { [200, { "content-type" => "text/plain" }, BODY] }
