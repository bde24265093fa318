# frozen_string_literal: true

require "helper"

# `gem build` then `gem install` of the built gem works offline, and its executables run;
# without cargo the install stops at once saying what to install. A Gemfile naming the
# checkout with `path:` (beside Debian's rack) resolves offline and `bundle exec catamount`
# serves with the app's config/puma.rb.
class TestGem < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  def sh(env, *cmd, chdir:, success: true)
    out = IO.popen(env, cmd, chdir: chdir, err: %i[child out], &:read)
    assert_equal success, $?.success?, "#{cmd.join(' ')} #{success ? 'failed' : 'succeeded'}:\n#{out}"
    out
  end

  # A private GEM_HOME in `dir`, with the system's gems (Debian's rack) still visible.
  def private_gems(dir)
    home = File.join(dir, "gems")
    { "GEM_HOME" => home, "GEM_PATH" => "#{home}:#{Gem.path.join(':')}" }
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
      env = env.merge(private_gems(dir))
      home = env["GEM_HOME"]
      sh(env, "gem", "install", "--local", "--no-document", gem, chdir: dir)
      out = sh(env, File.join(home, "bin", "catamount"), "--version", chdir: dir)
      assert_match(/catamount version #{Regexp.escape(Catamount::VERSION)}/o, out)
      assert_equal "#{Catamount::VERSION}\n", sh(env, File.join(home, "bin", "catamountctl"), "-V", chdir: dir)
      # Debian's rackup finds the installed gem's handler through RubyGems (no -I): its options show.
      assert_match(/Server-specific options for Rack::Handler::Catamount/, sh(env, "rackup", "-s", "catamount", "-h", chdir: dir))
      refuses_without_cargo(gem, dir)
    end
  end

  # Bundler does not build a path gem's extension: the checkout's own (`make build`, as for
  # every test) is the one loaded. `bundle install --local` (offline) writes the gem's
  # executables into the private GEM_HOME, which `bundle exec` puts first on PATH.
  def test_bundle_exec_from_a_path_gem_with_config_puma_rb
    Dir.mktmpdir do |dir|
      app = File.join(dir, "app")
      FileUtils.mkdir_p(File.join(app, "config"))
      File.write(File.join(app, "Gemfile"), "gem \"rack\"\ngem \"catamount\", path: #{Support::ROOT.inspect}\n")
      File.write(File.join(app, "config.ru"), "run ->(_) { [200, { \"content-type\" => \"text/plain\" }, [\"bundled\"]] }\n")
      File.write(File.join(app, "config", "puma.rb"), "bind \"tcp://127.0.0.1:0\"\nthreads 1, 2\n")
      env = private_gems(dir).merge("BUNDLE_GEMFILE" => File.join(app, "Gemfile"), "BUNDLE_APP_CONFIG" => File.join(app, ".bundle"),
                                    "RUBYOPT" => nil, "BUNDLE_BIN_PATH" => nil)
      sh(env, "bundle", "lock", "--local", chdir: app)
      assert_match(/^    catamount \(#{Regexp.escape(Catamount::VERSION)}\)$/, File.read(File.join(app, "Gemfile.lock")))
      sh(env, "bundle", "install", "--local", chdir: app)
      server = launch(%w[-C config/puma.rb], env: env, chdir: app, command: %w[bundle exec catamount], boot: true)
      assert_match(/Max threads: 2/, server.stdout)
      assert_equal "bundled", get(server.port, "/").body
    end
  end

  private

  # `gem install` with no cargo to be found (none on PATH, no $CARGO, a HOME without
  # ~/.cargo/bin) fails before building anything, and says what to install.
  def refuses_without_cargo(gem, dir)
    empty = File.join(dir, "no-cargo")
    FileUtils.mkdir_p(empty)
    env = private_gems(empty).merge("PATH" => empty, "HOME" => empty, "CARGO" => nil)
    out = sh(env, Gem.ruby, File.join(RbConfig::CONFIG["bindir"], "gem"), "install", "--local", "--no-document", gem,
             chdir: empty, success: false)
    assert_match(/cargo, Rust's build tool, was not found/, out)
    assert_match(/install a Rust toolchain \(\d+\.\d+ or\s+newer\) with rustup/, out)
    refute_path_exists File.join(empty, "gems", "bin", "catamount")
  end
end
