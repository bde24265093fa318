# frozen_string_literal: true

# Hello world plus /__alloc, which answers the process's count of Ruby objects allocated so far:
# the benchmark reads it before and after a run to get objects allocated per request.
BODY = ["Hello World\n"].freeze

run(lambda do |env|
  if env["PATH_INFO"] == "/__alloc"
    [200, { "content-type" => "text/plain" }, [GC.stat(:total_allocated_objects).to_s]]
  else
    [200, { "content-type" => "text/plain" }, BODY]
  end
end)
