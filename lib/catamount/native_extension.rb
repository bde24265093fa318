# frozen_string_literal: true

# Loads the native extension (catamount.so, built from crates/catamount-ext), saying how to
# build it when it is missing: a checkout used as it is (`bin/catamount`, or a Gemfile's
# `gem "catamount", path: ...`, whose extension Bundler never builds) needs `make build` first.
begin
  require "catamount/catamount"
rescue LoadError => e
  raise unless e.path.nil? || e.path == "catamount/catamount"

  raise LoadError, "Catamount's native extension (lib/catamount/catamount.so) is not built. In a source " \
                   "checkout (also one a Gemfile names with `path:`: Bundler does not build a path gem's " \
                   "extension), run `make build` there (it needs cargo); or install the gem " \
                   "(`gem install catamount-*.gem`), which builds it. (#{e.message})"
end
