# frozen_string_literal: true

# The kitchen app with GC.stress on: a Ruby value the native side forgot to keep reachable
# is collected at once, and the request crashes or returns garbage.
eval(File.read(File.join(__dir__, "kitchen.ru")), binding, File.join(__dir__, "kitchen.ru"), 1) # rubocop:disable Security/Eval
GC.stress = true
