# frozen_string_literal: true

# How many glibc malloc arenas this process has (test_malloc_arenas.rb): GET /arenas counts the
# heaps `malloc_info(3)` lists; GET /together?n=N holds each request until N of them are in the
# app at once (at most 10 s), so that N pool threads have each run a request and made 100 KiB
# Strings, as a POST echo does, before the arenas are counted.
require "fiddle"
require "tmpdir"

LIBC = Fiddle.dlopen(nil)
FOPEN = Fiddle::Function.new(LIBC["fopen"], [Fiddle::TYPE_VOIDP, Fiddle::TYPE_VOIDP], Fiddle::TYPE_VOIDP)
FCLOSE = Fiddle::Function.new(LIBC["fclose"], [Fiddle::TYPE_VOIDP], Fiddle::TYPE_INT)
MALLOC_INFO = Fiddle::Function.new(LIBC["malloc_info"], [Fiddle::TYPE_INT, Fiddle::TYPE_VOIDP], Fiddle::TYPE_INT)
TOGETHER = { lock: Mutex.new, arrived: ConditionVariable.new, count: 0 }

def arenas
  Dir.mktmpdir do |dir|
    path = File.join(dir, "malloc_info.xml")
    file = FOPEN.call(path, "w")
    raise "fopen #{path} failed" if file.null?

    MALLOC_INFO.call(0, file)
    FCLOSE.call(file)
    File.read(path).scan("<heap nr=").size
  end
end

def together(wanted)
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
  TOGETHER[:lock].synchronize do
    TOGETHER[:count] += 1
    TOGETHER[:arrived].broadcast
    while TOGETHER[:count] < wanted
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      return "alone" if left <= 0

      TOGETHER[:arrived].wait(TOGETHER[:lock], left)
    end
  end
  Array.new(8) { "p" * 100 * 1024 }.sum(&:bytesize)
  "together"
end

run(lambda do |env|
  case env["PATH_INFO"]
  when "/arenas" then [200, { "content-type" => "text/plain" }, [arenas.to_s]]
  when "/together" then [200, { "content-type" => "text/plain" }, [together(Integer(env["QUERY_STRING"][/n=(\d+)/, 1]))]]
  else [404, {}, []]
  end
end)
