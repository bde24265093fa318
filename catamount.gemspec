# frozen_string_literal: true

require_relative "lib/catamount/version"

Gem::Specification.new do |spec|
  spec.name = "catamount"
  spec.version = Catamount::VERSION
  spec.summary = "A Rack application server written in Rust, a drop-in replacement for Puma"
  spec.description = "Catamount serves Rack apps with Puma's CLI flags and config DSL; everything " \
                     "between the socket and app.call runs in Rust."
  spec.authors = ["Catamount developers"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.0"
  spec.files = Dir[
    "Cargo.toml", "Cargo.lock", "crates/*/Cargo.toml", "crates/*/src/**/*.rs",
    # A workspace member (the benchmark's load tools): cargo needs its sources to load the workspace.
    "bench/tools/Cargo.toml", "bench/tools/src/**/*.rs",
    "lib/**/*.rb", "exe/*", "ext/catamount/extconf.rb", "README.md"
  ]
  spec.bindir = "exe"
  spec.executables = ["catamount", "catamountctl"]
  spec.require_paths = ["lib"]
  # Builds crates/catamount-ext with cargo (see ext/catamount/extconf.rb).
  spec.extensions = ["ext/catamount/extconf.rb"]
  spec.add_dependency "rack", ">= 2.2"
end
