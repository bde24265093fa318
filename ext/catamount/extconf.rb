# frozen_string_literal: true

# Writes the Makefile RubyGems runs to build the native extension: cargo builds
# crates/catamount-ext, and `make install` puts catamount.so where `require "catamount/catamount"`
# finds it. Set CARGO_TARGET_DIR to reuse an existing build. Without cargo it stops here, saying
# what to install (rather than leaving make to fail with "cargo: not found").
require "rbconfig"
require "shellwords"

# cargo as `$CARGO` names it, else the first on PATH, else rustup's default place
# (~/.cargo/bin, which a non-login shell or sudo may leave off PATH); nil when none runs.
def find_cargo
  candidates = [ENV.fetch("CARGO", nil)] +
               ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |dir| File.join(dir, "cargo") } +
               [(File.join(Dir.home, ".cargo", "bin", "cargo") if ENV["HOME"])]
  candidates.compact.reject(&:empty?).find { |path| File.file?(path) && File.executable?(path) }
end

# The workspace's rust-version (Cargo.toml), for the message.
RUST_VERSION = File.read(File.expand_path("../../Cargo.toml", __dir__))[/^rust-version = "([^"]+)"/, 1]

cargo = find_cargo
unless cargo
  abort <<~MESSAGE
    catamount: cargo, Rust's build tool, was not found ($CARGO, PATH, ~/.cargo/bin).
    Catamount's native extension is written in Rust: install a Rust toolchain (#{RUST_VERSION} or
    newer) with rustup (https://rustup.rs), then install the gem again. Set CARGO to cargo's path
    if it lives elsewhere.
  MESSAGE
end

root = File.expand_path("../..", __dir__)
target = ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target"))
built = File.join(target, "release", "libcatamount.so")

File.write("Makefile", <<~MAKE)
  sitearchdir ?= #{RbConfig::CONFIG['sitearchdir']}

  all:
  \tcd #{root.shellescape} && CARGO_TARGET_DIR=#{target.shellescape} #{cargo.shellescape} build --release --locked -p catamount-ext
  \tcp #{built.shellescape} catamount.so

  install: all
  \tmkdir -p $(DESTDIR)$(sitearchdir)/catamount
  \tcp catamount.so $(DESTDIR)$(sitearchdir)/catamount/catamount.so

  clean:
  \trm -f catamount.so
MAKE
