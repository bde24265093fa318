# frozen_string_literal: true

# The partial-hijack app with GC.stress on: a Ruby value the native side forgot to keep
# reachable (a callable body, its stream, rack.protocol's Array, the upgraded socket) is
# collected at once, and the request crashes or returns garbage.
eval(File.read(File.join(__dir__, "partial_hijack.ru")), binding, File.join(__dir__, "partial_hijack.ru"), 1) # rubocop:disable Security/Eval
GC.stress = true
