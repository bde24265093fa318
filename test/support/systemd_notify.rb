# frozen_string_literal: true

module Support
  # Reading what a server sends to the NOTIFY_SOCKET a test binds (systemd's sd_notify
  # datagrams). Include beside Support::ServerTest.
  module SystemdNotify
    # Reads datagrams from the notify socket until `pattern` matches one (bounded).
    def notification(socket, pattern, timeout: 15)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      loop do
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        raise "no notification matching #{pattern.inspect}" if left <= 0 || !socket.wait_readable(left)

        message = socket.recv(4096)
        return message if message.match?(pattern)
      end
    end
  end
end
