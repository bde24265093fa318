# frozen_string_literal: true

# Catamount: a Rack application server written in Rust, a drop-in replacement for Puma.
#
# Everything between the socket and `app.call(env)` lives in the native extension
# (lib/catamount/catamount.so, built from crates/catamount-ext). This Ruby side is thin: it
# evaluates config files, loads the rackup file, starts the pool's Ruby threads and waits for
# signals on the main thread (a main thread blocked in native code would not receive them).

require "stringio"
require "catamount/version"
require "catamount/catamount"
require "catamount/dsl"
require "catamount/launcher"
