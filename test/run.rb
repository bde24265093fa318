# frozen_string_literal: true

# Runs every process-level test: each starts the real server (bin/catamount) on a port the OS
# chooses and talks to it over loopback sockets.
$LOAD_PATH.unshift(File.expand_path("support", __dir__))
Dir[File.join(__dir__, "**", "test_*.rb")].sort.each { |f| require f }
