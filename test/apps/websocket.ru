# frozen_string_literal: true

# The WebSocket tests' app (test/test_websocket.rb): Debian's websocket-driver on connections
# taken with `env["rack.hijack"]`, all served by one event-loop thread of the app's own (the pool
# thread returns from app.call at once), as faye-websocket and ActionCable do. `/ws` waits with
# IO.select; `/ws-nio` with nio4r's NIO::Selector, which polls the descriptors themselves (as
# ActionCable's event loop does). The server echoes text and binary messages, answers pings
# (websocket-driver does), closes with code 4000 when told "close me", and completes a close
# the client starts. `/` is a plain response, to show the server still answers meanwhile.
require "websocket/driver"
require "nio"

# What WebSocket::Driver.rack talks through: the request's env and the hijacked IO.
class Connection
  attr_reader :env, :io, :driver

  def initialize(env, io)
    @env = env
    @io = io
    @driver = WebSocket::Driver.rack(self)
    @driver.on(:message) { |e| answer(e.data) }
    @driver.on(:close) { io.close unless io.closed? }
  end

  def url
    "ws://#{env['HTTP_HOST']}#{env['REQUEST_URI']}"
  end

  def write(data)
    io.write(data)
  rescue IOError, SystemCallError
    io.close unless io.closed?
  end

  def answer(data)
    if data.is_a?(Array) then driver.binary(data)
    elsif data == "close me" then driver.close("bye", 4000)
    else driver.text(data)
    end
  end

  # Feeds what the client sent to the driver; false once the connection is over.
  def readable
    loop { driver.parse(io.read_nonblock(16_384)) }
  rescue IO::WaitReadable
    !io.closed?
  rescue EOFError, IOError, SystemCallError
    io.close unless io.closed?
    false
  end
end

# One thread serving every connection handed to it; `wait` is the backend's readiness wait.
class EventLoop
  def initialize
    @added = Queue.new
    @wake_r, @wake_w = IO.pipe
  end

  def start
    Thread.new { run }
    self
  end

  def add(connection)
    @added << connection
    @wake_w.write_nonblock(".", exception: false)
  end

  private

  def run
    loop do
      wait.each do |c|
        next drain_wakeups if c == :wakeup

        forget(c) unless c.readable
      end
    end
  end

  def drain_wakeups
    @wake_r.read_nonblock(4096, exception: false)
    until @added.empty?
      c = @added.pop
      c.driver.start
      watch(c) unless c.io.closed?
    end
  end
end

class SelectLoop < EventLoop
  def initialize
    super
    @connections = {}
  end

  def watch(c) = @connections[c.io] = c
  def forget(c) = @connections.delete(c.io)

  def wait
    ready, = IO.select([@wake_r, *@connections.keys])
    ready.map { |io| io == @wake_r ? :wakeup : @connections[io] }
  end
end

class NioLoop < EventLoop
  # Registered before the thread starts: nio4r's register waits while another thread selects.
  def initialize
    super
    @selector = NIO::Selector.new
    @selector.register(@wake_r, :r).value = :wakeup
  end

  def watch(c) = @selector.register(c.io, :r).value = c

  def forget(c)
    @selector.deregister(c.io)
  end

  def wait
    ready = []
    @selector.select { |monitor| ready << monitor.value }
    ready
  end
end

LOOPS = { "/ws" => SelectLoop.new.start, "/ws-nio" => NioLoop.new.start }.freeze

run lambda { |env|
  event_loop = LOOPS[env["PATH_INFO"]]
  if event_loop && WebSocket::Driver.websocket?(env)
    event_loop.add(Connection.new(env, env["rack.hijack"].call))
    [-1, {}, []]
  else
    [200, { "content-type" => "text/plain" }, ["plain"]]
  end
}
