# frozen_string_literal: true

# Apps that leave the server's frames in unusual ways (test_native_boundary): a thread killed
# or a `throw` in each place app code runs while a request is served, and bodies that must not
# stall the other requests.

# A `throw :escape` from app code must pass through the native frames to a `catch` outside
# them; this puts one around each pool thread's loop, and an `ensure` a kill passes through.
Catamount::Native::Server.prepend(Module.new do
  def run_worker(app)
    catch(:escape) { super }
  ensure
    Thread.current[:left_run_worker] = true
  end
end)

# `File.for_fd` (which makes a large request body's `rack.input`) left by a kill once it has
# made the IO, when armed: the IO then owns the descriptor, and nothing else may close it.
module ForFdKill
  class << self
    attr_accessor :armed, :io, :inode
  end

  def for_fd(*args, **options)
    io = super
    if ForFdKill.armed
      ForFdKill.armed = false
      ForFdKill.io = io
      ForFdKill.inode = io.stat.ino
      Thread.current.kill
    end
    io
  end
end
File.singleton_class.prepend(ForFdKill)

# A body that dies (or throws) in `each` or `close`.
class LeavingBody
  def initialize(each_does: nil, close_does: nil)
    @each_does = each_does
    @close_does = close_does
  end

  # Leaves before its part (a yielded part is sent at once: leaving after it aborts the
  # connection instead of answering 500).
  def each
    @each_does&.call
    yield "part"
  end

  def close
    @close_does&.call
  end
end

# A `close` that rescues an exception of its own: Ruby's record of the error being handled
# (`$!`, where a pending jump keeps its state) changes and must be put back.
RESCUING = lambda do
  raise "handled inside close"
rescue RuntimeError
  nil
end

# A header name whose `inspect` (asked for by the error message about it) dies.
class DyingKey
  def inspect
    Thread.current.kill
  end
end

# An exception whose `inspect` (asked for by the error log) dies. (Not `backtrace`: Ruby asks
# for that itself while raising, and swallows the kill there.)
class DyingError < StandardError
  def inspect
    Thread.current.kill
  end
end

# A body whose `to_path` is a FIFO: opening it for reading would wait for a writer.
class FifoBody
  def initialize(path)
    @path = path
  end

  def to_path
    @path
  end

  def each
    yield "from each"
  end
end

# A body whose `to_ary` turns on compaction at every allocation (until its `close`): a Ruby
# String held only by a Rust copy of the list would be read at its old address.
class CompactingBody
  def initialize(parts)
    @parts = parts
  end

  def to_ary
    GC.auto_compact = true
    GC.stress = true
    @parts
  end

  def close
    GC.stress = false
    GC.auto_compact = false
  end
end

# A body that yields from a second thread while its own thread's large parts are written (the
# GVL is released for those): no part may be lost from a response that looks complete.
class TwoThreadBody
  def each(&block)
    other = Thread.new { 300.times { block.call("o" * 100) } }
    8.times { block.call("m" * 1_000_000) }
    other.join
  end
end

ROUTES = {
  "/thread" => ->(_env) { [200, {}, [Thread.current.object_id.to_s]] },
  "/kill/call" => ->(_env) { Thread.current.kill },
  "/kill/each" => ->(_env) { [200, {}, LeavingBody.new(each_does: -> { Thread.current.kill })] },
  "/kill/close" => ->(_env) { [200, { "content-length" => "4" }, LeavingBody.new(close_does: -> { Thread.current.kill })] },
  "/kill/after_reply" => lambda do |env|
    env["rack.after_reply"] << -> { Thread.current.kill }
    [200, {}, ["replied"]]
  end,
  "/kill/headers" => ->(_env) { [200, { DyingKey.new => "v" }, ["x"]] },
  "/kill/error" => ->(_env) { raise DyingError, "reported" },
  "/throw/each" => ->(_env) { [200, {}, LeavingBody.new(each_does: -> { throw :escape })] },
  "/stats" => ->(_env) { [200, {}, [Catamount.stats.slice(:running, :busy_threads, :backlog).to_a.join(" ")]] },
  "/raise" => ->(_env) { raise ArgumentError, "for the handler" },
  "/throw/each/rescuing_close" => lambda do |_env|
    [200, {}, LeavingBody.new(each_does: -> { throw :escape }, close_does: RESCUING)]
  end,
  "/kill/each/rescuing_close" => lambda do |_env|
    [200, {}, LeavingBody.new(each_does: -> { Thread.current.kill }, close_does: RESCUING)]
  end,
  "/for_fd/arm" => ->(_env) { ForFdKill.armed = true; [200, {}, ["armed"]] },
  "/for_fd/check" => lambda do |_env|
    same = begin
      ForFdKill.io.stat.ino == ForFdKill.inode ? "same" : "another file"
    rescue SystemCallError => e
      e.class.name
    end
    [200, {}, [same]]
  end,
  "/compacting_array" => lambda do |_env|
    # Garbage first, so the Strings made after it have free slots to move to.
    Array.new(100_000) { Object.new }
    [200, {}, CompactingBody.new(Array.new(2000) { |i| format("%07d\n", i) * 12 })]
  end,
  "/two_threads" => ->(_env) { [200, {}, TwoThreadBody.new] },
  "/fifo" => ->(env) { [200, {}, FifoBody.new(env["QUERY_STRING"].delete_prefix("path="))] }
}.freeze

run(lambda do |env|
  route = ROUTES[env["PATH_INFO"]]
  route ? route.call(env) : [404, {}, ["not found"]]
end)
