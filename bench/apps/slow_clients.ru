# frozen_string_literal: true

# Hello world plus a 4 MiB download: the normal load hits "/", the slow readers "/download".
HELLO = ["Hello World\n"].freeze
DOWNLOAD = ["d" * (4 << 20)].freeze
PAGE = ["p" * (48 << 10)].freeze

run(lambda do |env|
  case env["PATH_INFO"]
  when "/download"
    [200, { "content-type" => "application/octet-stream" }, DOWNLOAD]
  when "/page"
    [200, { "content-type" => "text/html" }, PAGE]
  else
    [200, { "content-type" => "text/plain" }, HELLO]
  end
end)
