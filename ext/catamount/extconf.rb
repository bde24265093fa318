# frozen_string_literal: true

# Writes the Makefile RubyGems runs to build the native extension: cargo builds
# crates/catamount-ext, and `make install` puts catamount.so where `require "catamount/catamount"`
# finds it. Set CARGO_TARGET_DIR to reuse an existing build.
require "rbconfig"

root = File.expand_path("../..", __dir__)
target = ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target"))
built = File.join(target, "release", "libcatamount.so")

File.write("Makefile", <<~MAKE)
  sitearchdir ?= #{RbConfig::CONFIG['sitearchdir']}

  all:
  \tcd #{root} && CARGO_TARGET_DIR=#{target} cargo build --release --locked -p catamount-ext
  \tcp #{built} catamount.so

  install: all
  \tmkdir -p $(DESTDIR)$(sitearchdir)/catamount
  \tcp catamount.so $(DESTDIR)$(sitearchdir)/catamount/catamount.so

  clean:
  \trm -f catamount.so
MAKE
