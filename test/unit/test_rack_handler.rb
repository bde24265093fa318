# frozen_string_literal: true

# What the Rack handler (Catamount::RackHandler) makes of the options Hash rackup and
# `rails server` pass: the command-line flags (the user's choices), the settings recorded before
# and after config/puma.rb (the command's defaults), as Puma 5.6's handler layers them. No server.
$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "minitest/autorun"
require "catamount/rack_handler"

class TestRackHandler < Minitest::Test
  parallelize_me!

  Handler = Catamount::RackHandler

  # rackup (Rack 2.2 and 3) names no user-supplied options: every key is the user's, so its
  # host and port (its own defaults among them) beat config/puma.rb's binds.
  def test_rackup_options_are_all_the_users
    plan = Handler.plan({ environment: "development", pid: nil, Port: "9292", Host: "localhost",
                          AccessLog: [], config: "/app/config.ru", server: "catamount" })
    assert_equal ["--environment", "development", "--bind", "tcp://localhost:9292"], plan.argv
    assert_empty plan.presets
    assert_empty plan.fallbacks
    assert_nil plan.environment
  end

  def test_rackup_server_options
    plan = Handler.plan({ Port: "0", Host: "127.0.0.1", Threads: "1:4", Silent: true, Verbose: true })
    assert_equal ["--threads", "1:4", "--bind", "tcp://127.0.0.1:0", "--silent"], plan.argv
    assert plan.verbose
  end

  # Rails 6.1 lists what the user typed: the rest (its default port and host, the environment
  # it guessed, its restart command) is a default the config file may override.
  def test_rails_defaults_come_after_the_config_file
    plan = Handler.plan({ user_supplied_options: [:using], server: "catamount", Port: 3000, Host: "0.0.0.0",
                          environment: "production", restart_cmd: "bin/rails server --restart", early_hints: nil,
                          pid: "/app/tmp/pids/server.pid" })
    assert_empty plan.argv
    assert_equal [["set_default_host", ["0.0.0.0"]]], plan.presets
    assert_equal [[:binds, "bind", ["tcp://0.0.0.0:3000"]], [:environment, "environment", ["production"]],
                  [:restart_cmd, "restart_command", ["bin/rails server --restart"]]], plan.fallbacks
    assert_equal "production", plan.environment
  end

  # A user's port with the default host binds that host, as Puma's handler does.
  def test_rails_user_port_takes_the_default_host
    plan = Handler.plan({ user_supplied_options: %i[Port environment early_hints], Port: 4000, Host: "localhost",
                          environment: "production", early_hints: true })
    assert_equal ["--environment", "production", "--bind", "tcp://localhost:4000", "--early-hints"], plan.argv
    assert_equal [["set_default_host", ["localhost"]]], plan.presets
    # Puma's default layer gets the default host's bind too; the user's wins over it.
    assert_equal [:binds], plan.fallbacks.map(&:first)
  end

  def test_bind_urls_from_host_and_port
    {
      ["127.0.0.1", 80] => "tcp://127.0.0.1:80",
      [nil, "8080"] => "tcp://0.0.0.0:8080",
      ["example.test", nil] => "tcp://example.test:9292",
      ["::1", 3] => "tcp://[::1]:3",
      ["[::1]", 3] => "tcp://[::1]:3",
      ["/run/app.sock", 3] => "unix:///run/app.sock",
      ["./app.sock", nil] => "unix://./app.sock",
      ["ssl://0.0.0.0?key=k.pem&cert=c.pem", 9443] => "ssl://0.0.0.0:9443?key=k.pem&cert=c.pem",
      ["ssl://0.0.0.0:8443?key=k.pem&cert=c.pem", 9443] => "ssl://0.0.0.0:8443?key=k.pem&cert=c.pem"
    }.each do |(host, port), url|
      assert_equal url, Handler.bind_url(host, port), "#{host.inspect}, #{port.inspect}"
    end
  end

  def test_valid_options_list_puma_handlers_names
    assert_equal %w[Host=HOST Port=PORT Threads=MIN:MAX Verbose Silent], Handler.valid_options.keys
  end
end
