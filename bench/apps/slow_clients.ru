# frozen_string_literal: true

# Hello world plus a 4 MiB download: the normal load hits "/", the slow readers "/download".
HELLO = ["Hello World\n"].freeze
DOWNLOAD = ["d" * (4 << 20)].freeze

run(lambda do |env|
  if env["PATH_INFO"] == "/download"
    [200, { "content-type" => "application/octet-stream" }, DOWNLOAD]
  else
    [200, { "content-type" => "text/plain" }, HELLO]
  end
end)
