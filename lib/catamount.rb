# frozen_string_literal: true

# Catamount: a Rack application server written in Rust, a drop-in replacement for Puma.
#
# Everything between the socket and `app.call(env)` lives in the native extension
# (lib/catamount/catamount.so, built from crates/catamount-ext). This Ruby side is thin: it
# evaluates config files, loads the rackup file, starts the pool's Ruby threads and waits for
# signals on the main thread (a main thread blocked in native code would not receive them).

require "stringio"
require "io/wait"
# The hijacked connection's IO classes (rack.hijack): loaded at boot, before the app, not when
# the first server is made (a require after the app loaded is slow under GC.stress, and any
# app's copy-on-write pages would take it in every worker).
require "socket"
require "catamount/version"
require "catamount/native_extension"
require "catamount/configuration"
require "catamount/null_input"
require "catamount/callable_body"
require "catamount/dsl"
require "catamount/plugin"
require "catamount/puma_compat"
require "catamount/context"
require "catamount/restart"
require "catamount/app_loader"
require "catamount/process_files"
require "catamount/banner"
require "catamount/control"
require "catamount/pool"
require "catamount/fiber_scheduler"
require "catamount/drain"
require "catamount/timers"
require "catamount/serving"
require "catamount/single"
require "catamount/cluster/signals"
require "catamount/cluster/pipes"
require "catamount/cluster/worker_table"
require "catamount/cluster/master"
require "catamount/cluster/worker"
require "catamount/cluster/template"
require "catamount/launcher"

module Catamount
  class << self
    # The configuration of the running server (nil before boot).
    attr_accessor :config
    # The running launcher (nil before boot).
    attr_accessor :launcher

    # The server's numbers in Puma's `stats` shape (a Hash with Symbol keys; docs/stats.md);
    # empty before boot.
    def stats(reset_max: false)
      launcher ? launcher.stats(reset_max: reset_max) : {}
    end
  end
end
