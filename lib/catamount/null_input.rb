# frozen_string_literal: true

module Catamount
  # `rack.input` of every request without a body. It has no state, so one frozen instance
  # serves all requests and threads: a GET costs no StringIO and no String for its input.
  # It answers the Rack input protocol as an empty, already-read stream would.
  class NullInput
    # Nothing left: "" when asked for everything, nil when asked for a positive length
    # (as IO#read at end of file). A given buffer is emptied.
    def read(length = nil, buffer = nil)
      raise ArgumentError, "negative length #{length} given" if length&.negative?

      buffer&.clear
      return nil if length&.positive?

      buffer || +""
    end

    def gets(*)
      nil
    end

    def each
      return to_enum(:each) unless block_given?

      self
    end

    def rewind
      0
    end

    def size
      0
    end

    def eof?
      true
    end

    def close; end

    def closed?
      false
    end

    INSTANCE = new.freeze
  end
end
