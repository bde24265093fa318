# frozen_string_literal: true

# Echoes the request body (the bench posts 100 KiB): reading rack.input, then writing it back.
run(lambda do |env|
  body = env["rack.input"].read
  [200, { "content-type" => "application/octet-stream", "content-length" => body.bytesize.to_s }, [body]]
end)
