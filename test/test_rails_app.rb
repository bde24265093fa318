# frozen_string_literal: true

require "helper"
require "chromium"
require "open3"
require "timeout"

# examples/rails-app (a Rails 6.1 app `rails new` made offline, its config/puma.rb as generated)
# served by `catamount -C config/puma.rb` in development and production, single and cluster
# mode, each driven by a real headless chromium (test/support/chromium.rb, rails_browser.py):
# the page loads, its form posts with the CSRF token chromium sends, the cookie session survives
# the redirect, ActionCable delivers a broadcast to the page, a streamed response arrives whole.
# Raw sockets check what a browser does not show: a POST without the token is refused (422) and
# the stream leaves in one chunk per line.
class TestRailsApp < Minitest::Test
  include Support::ServerTest
  parallelize_me!

  EXAMPLE = File.join(Support::ROOT, "examples", "rails-app")
  DRIVER = File.join(__dir__, "support", "rails_browser.py")
  # The command examples/rails-app/README.md says made the app.
  RAILS_NEW_SKIPS = %w[bundle git javascript webpack-install bootsnap spring listen active-storage action-mailbox
                       action-text active-record test system-test sprockets action-mailer jbuilder].freeze
  CLEAN_ENV = %w[RACK_ENV RAILS_ENV APP_ENV PORT BINDING HOST PIDFILE BUNDLE_GEMFILE RUBYOPT WEB_CONCURRENCY
                 RAILS_MAX_THREADS RAILS_MIN_THREADS SECRET_KEY_BASE RAILS_SERVE_STATIC_FILES
                 RAILS_LOG_TO_STDOUT].to_h { |k| [k, nil] }.freeze
  LOCK = Mutex.new

  def self.command(name)
    ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |dir| File.join(dir, name) }.find { |p| File.executable?(p) }
  end

  def self.run_bounded(*cmd, chdir:)
    out, status = Timeout.timeout(120) { Open3.capture2e(CLEAN_ENV, *cmd, chdir: chdir) }
    raise "#{cmd.join(' ')} failed:\n#{out}" unless status.success?
  end

  # One chromium for the whole file (each run of the driver has a browser context of its own),
  # stopped by its PID after the run.
  def self.browser
    LOCK.synchronize do
      @browser ||= begin
        raise Minitest::Skip, "chromium is not installed (script/bootstrap installs it)" unless Chromium.command

        Chromium.new.tap { |browser| Minitest.after_run { browser.stop } }
      end
    end
  end

  # A copy of the example with its Gemfile naming this checkout by absolute path, locked from
  # the installed gems (`bundle lock --local`, as the README says). Made once per run; each
  # server runs in a copy of it (its own log/ and tmp/).
  def self.template
    LOCK.synchronize do
      @template ||= begin
        raise Minitest::Skip, "rails or bundle is not installed (script/bootstrap installs ruby-rails)" unless command("rails") && command("bundle")

        root = Dir.mktmpdir("catamount-rails-app")
        Minitest.after_run { FileUtils.rm_rf(root) }
        app = File.join(root, "app")
        FileUtils.cp_r(EXAMPLE, app)
        # What running the example in place left (the checkout's .gitignore names it).
        %w[Gemfile.lock log tmp].each { |leftover| FileUtils.rm_rf(File.join(app, leftover)) }
        %w[log tmp/pids].each { |empty| FileUtils.mkdir_p(File.join(app, empty)) }
        gemfile = File.join(app, "Gemfile")
        File.write(gemfile, File.read(gemfile).sub('path: "../.."', "path: #{Support::ROOT.inspect}"))
        run_bounded(command("bundle"), "lock", "--local", chdir: app)
        app
      end
    end
  end

  # `catamount -C config/puma.rb` in a fresh copy of the app; the bind replaces the file's
  # `port` (as Puma's -b does). Waits for every worker's boot in a cluster.
  def start_app(environment, *args, workers: nil)
    dir = Dir.mktmpdir("catamount-rails-run")
    (@dirs ||= []) << dir
    FileUtils.cp_r(File.join(self.class.template, "."), dir)
    env = CLEAN_ENV.merge("RAILS_ENV" => environment, "BUNDLE_GEMFILE" => File.join(dir, "Gemfile"))
    if environment == "production"
      env.merge!("SECRET_KEY_BASE" => "s3cr3t" * 16, "RAILS_SERVE_STATIC_FILES" => "1")
    else
      # Development keeps its secret in tmp/development_secret.txt, written by the first boot:
      # written here, or two workers booting at once could each write (and sign with) their own.
      FileUtils.mkdir_p(File.join(dir, "tmp"))
      File.write(File.join(dir, "tmp", "development_secret.txt"), "d3v" * 40)
    end
    args += ["-w", workers.to_s] if workers
    server = launch(["-C", "config/puma.rb", "-b", "tcp://127.0.0.1:0", *args], chdir: dir, env: env)
    server.boot!(timeout: 120)
    (workers || 0).times { |i| server.wait_for(/Worker #{i} \(PID: \d+\) booted/, timeout: 120) }
    assert_match(/Environment: #{environment}$/, server.stdout)
    server
  end

  def teardown
    super
    (@dirs || []).each { |dir| FileUtils.rm_rf(dir) }
  end

  # What the browser saw, step by step (rails_browser.py's report).
  def drive_browser(server, name)
    assert File.executable?(PYTHON), "#{PYTHON} missing: script/bootstrap installs websockets there"
    app = "http://127.0.0.1:#{server.port}"
    IO.popen([PYTHON, DRIVER, self.class.browser.devtools_url, app, name], err: %i[child out]) do |io|
      line = read_report(io, timeout: 240)
      flunk "the browser run failed: #{line}#{io.read}\n--- server stdout\n#{server.stdout}\n--- stderr\n#{server.stderr}" unless line.start_with?("{")
      JSON.parse(line)
    end
  end

  # The page loads, the form posts (CSRF token and cookie sent by chromium), the session keeps
  # the name across the redirect and counts the visits, the broadcast arrives over ActionCable
  # from a serving process, the streamed page and a fetch() of it read every line in order.
  def assert_browser_run(server, name, pids)
    seen = drive_browser(server, name)
    assert_equal "Hello, stranger.", seen["first"]
    assert_equal({ "url" => "http://127.0.0.1:#{server.port}/", "greeting" => "Hello, #{name}!",
                   "visits" => "Visits in this session: 2" }, seen["after_post"])
    shout = seen["shouts"].first
    assert_match(/\A#{name} is here \(process (\d+)\)\z/, shout)
    assert_includes pids, shout[/process (\d+)/, 1].to_i
    lines = stream_lines(seen["stream_page"], pids)
    assert_equal 200, seen["stream_fetch"]["status"]
    assert_equal "text/plain; charset=utf-8", seen["stream_fetch"]["contentType"]
    stream_lines(seen["stream_fetch"]["reads"].join, pids)
    lines
  end

  def stream_lines(text, pids)
    lines = text.lines.map(&:chomp).reject(&:empty?)
    assert_equal (1..5).map { |i| "line #{i} of 5" }, lines.map { |l| l[/\Aline \d of 5/] }, text
    assert_includes pids, lines.first[/process (\d+)/, 1].to_i
    lines
  end

  def worker_pids(server)
    server.stdout.scan(/Worker \d+ \(PID: (\d+)\) booted/).flatten.map(&:to_i)
  end

  # A form POST with the session's cookie but not its token: Rails refuses it (422).
  def assert_post_without_token_refused(server)
    page = get(server.port, "/")
    cookie = page["set-cookie"][/\A[^;]+/]
    response = raw_request(server.port, "POST /greetings HTTP/1.1\r\nHost: 127.0.0.1:#{server.port}\r\nCookie: #{cookie}\r\n" \
                                        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n" \
                                        "Connection: close\r\n\r\nname=Eve")
    assert_equal 422, response.status
  end

  # The chunks of a chunked response as they came on the wire, in order.
  def wire_chunks(port, path)
    sock = connect(port)
    sock.write("GET #{path} HTTP/1.1\r\nHost: 127.0.0.1:#{port}\r\nConnection: close\r\n\r\n")
    head, body = read_until_close(sock, timeout: 30).split("\r\n\r\n", 2)
    assert_match(/^transfer-encoding: chunked\r?$/i, head)
    chunks = []
    until body.empty?
      size_line, body = body.split("\r\n", 2)
      size = size_line.to_i(16)
      chunks << body.byteslice(0, size)
      body = body.byteslice(size + 2..)
      break if size.zero?
    end
    chunks
  ensure
    sock&.close
  end

  def test_development_single
    server = start_app("development")
    assert_browser_run(server, "Ada", [server.pid])
    assert_post_without_token_refused(server)
  end

  # Production also serves public/ (RAILS_SERVE_STATIC_FILES), and each line of the stream
  # leaves as a chunk of its own (ActionController::Live writes them one by one).
  def test_production_single
    server = start_app("production")
    assert_browser_run(server, "Grace", [server.pid])
    assert_post_without_token_refused(server)
    chunks = wire_chunks(server.port, "/stream")
    assert_equal (1..5).map { |i| "line #{i} of 5 from process #{server.pid}\n" } + [""], chunks
    assert_match(/robots/, get(server.port, "/robots.txt").body)
  end

  # Two workers: the session cookie and the CSRF token hold whichever worker serves each
  # request (one SECRET_KEY_BASE); the broadcast comes from the worker holding the cable.
  def test_production_cluster
    server = start_app("production", workers: 2)
    assert_browser_run(server, "Barbara", worker_pids(server))
    assert_post_without_token_refused(server)
  end

  def test_development_cluster
    server = start_app("development", workers: 2)
    assert_browser_run(server, "Edsger", worker_pids(server))
  end

  # The example's config/puma.rb is the one `rails new` writes today, byte for byte.
  def test_config_puma_rb_is_as_rails_generates_it
    rails = self.class.command("rails")
    skip "rails is not installed (script/bootstrap installs ruby-rails)" unless rails
    dir = Dir.mktmpdir("catamount-rails-new")
    (@dirs ||= []) << dir
    self.class.run_bounded(rails, "new", "rails-app", *RAILS_NEW_SKIPS.map { |s| "--skip-#{s}" }, "--quiet", chdir: dir)
    assert_equal File.binread(File.join(dir, "rails-app", "config", "puma.rb")),
                 File.binread(File.join(EXAMPLE, "config", "puma.rb"))
  end
end
