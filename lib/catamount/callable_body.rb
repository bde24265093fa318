# frozen_string_literal: true

module Catamount
  # A callable response body (a Rack 3 streaming body, or the Rack 2 `rack.hijack` response
  # header's value) seen as an `each` body, so it goes out as any streamed body does: framed
  # (chunked without a content-length), under the same hand-over bounds, the connection kept
  # alive when the callable returns. The stream it is given turns every write into one yielded
  # part. The request's body was read before the app ran: reading the stream finds its end.
  # (A 101 Switching Protocols hands the callable the raw socket instead: see response.rs.)
  class CallableBody
    def initialize(callable)
      @callable = callable
    end

    def each(&block)
      stream = Stream.new(block)
      # The head goes out before the call, as the spec has it.
      yield ""
      begin
        @callable.call(stream)
      ensure
        stream.finish
      end
    end

    # The stream argument of a streaming body (Rack 3 SPEC: read, write, <<, flush, close and
    # the rest of the IO-like methods it lists), backed by the response being written.
    class Stream
      def initialize(sink)
        @sink = sink
        @write_closed = false
        @read_closed = false
      end

      def write(*parts)
        raise IOError, "closed stream" if @write_closed

        parts.sum do |part|
          part = part.to_s
          @sink.call(part)
          part.bytesize
        end
      end

      def <<(part)
        write(part)
        self
      end

      def write_nonblock(part, exception: true)
        write(part)
      end

      # Every write is sent as it is made.
      def flush
        raise IOError, "closed stream" if @write_closed

        self
      end

      # The request's body was read before the app ran: nothing more comes from this stream.
      def read(length = nil, buffer = nil)
        raise IOError, "not opened for reading" if @read_closed

        buffer&.clear
        return nil if length&.positive?

        buffer || +""
      end

      def readpartial(*)
        raise IOError, "not opened for reading" if @read_closed

        raise EOFError, "end of file reached"
      end

      def read_nonblock(_length, _buffer = nil, exception: true)
        raise IOError, "not opened for reading" if @read_closed
        return nil unless exception

        raise EOFError, "end of file reached"
      end

      def close_read
        @read_closed = true
        nil
      end

      def close_write
        @write_closed = true
        nil
      end

      def close
        @read_closed = true
        @write_closed = true
        nil
      end

      def closed?
        @read_closed && @write_closed
      end

      # The response ended (the callable returned or raised): later writes, from a thread the
      # app left behind, raise instead of vanishing.
      def finish
        close
      end
    end
  end
end
