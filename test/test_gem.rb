# frozen_string_literal: true

require "helper"

# `gem build` then `gem install` of the built gem works offline, and its executables run.
class TestGem < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def sh(env, *cmd, chdir:)
    out = IO.popen(env, cmd, chdir: chdir, err: %i[child out], &:read)
    assert $?.success?, "#{cmd.join(' ')} failed:\n#{out}"
    out
  end

  def test_gem_builds_installs_and_runs
    Dir.mktmpdir do |dir|
      src = File.join(dir, "src")
      system("git", "clone", "-q", Support::ROOT, src, exception: true)
      # Copy uncommitted changes too (and drop deleted files), so the test checks the working tree.
      Dir.chdir(Support::ROOT) do
        `git ls-files -mo --exclude-standard`.split("\n").each do |f|
          FileUtils.mkdir_p(File.dirname(File.join(src, f)))
          FileUtils.cp(f, File.join(src, f)) if File.file?(f)
        end
        `git diff --name-only --diff-filter=D HEAD`.split("\n").each { |f| FileUtils.rm_f(File.join(src, f)) }
      end
      env = { "CARGO_TARGET_DIR" => ENV.fetch("CARGO_TARGET_DIR", File.join(Dir.home, ".cache/catamount/target")) }
      sh(env, "gem", "build", "catamount.gemspec", chdir: src)
      gem = Dir[File.join(src, "catamount-*.gem")].first
      home = File.join(dir, "gems")
      # A private GEM_HOME, with the system's gems (Debian's rack) still visible.
      env = env.merge("GEM_HOME" => home, "GEM_PATH" => "#{home}:#{Gem.path.join(':')}")
      sh(env, "gem", "install", "--local", "--no-document", gem, chdir: dir)
      out = sh(env, File.join(home, "bin", "catamount"), "--version", chdir: dir)
      assert_match(/catamount version #{Regexp.escape(Catamount::VERSION)}/o, out)
      assert_equal "#{Catamount::VERSION}\n", sh(env, File.join(home, "bin", "catamountctl"), "-V", chdir: dir)
      # Debian's rackup finds the installed gem's handler through RubyGems (no -I): its options show.
      assert_match(/Server-specific options for Rack::Handler::Catamount/, sh(env, "rackup", "-s", "catamount", "-h", chdir: dir))
    end
  end
end
