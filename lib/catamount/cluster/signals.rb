# frozen_string_literal: true

module Catamount
  module Cluster
    # The cluster's signals: which ones the master traps, which of them a worker ignores, and
    # what the master does with one given the cluster's state. Pure (no trap, no IO): the
    # master's loop carries out the answer; test/unit/test_signals.rb checks the table.
    #
    # Where to add a signal: MASTER (trapped by the master, ignored by workers unless it is in
    # WORKER_OWN), a line in `action`, and what the action does in Master#handle_signal.
    module Signals
      # Every signal the master may trap (USR2 unless PUMA_SKIP_SIGUSR2, URG with fork_worker).
      MASTER = %w[TERM INT CHLD HUP TTIN TTOU USR1 USR2 URG].freeze
      # The ones a worker traps itself (TERM stops it, HUP reopens its logs, CHLD as by
      # default). It ignores the others: a `pkill` may reach every process of the tree, and
      # Ctrl-C's INT reaches the whole group (the master stops the workers).
      WORKER_OWN = %w[TERM HUP CHLD].freeze
      WORKER_IGNORED = (MASTER - WORKER_OWN).freeze

      # The master's traps: `restart` the restart signals wanted (Context#restart_signals).
      def self.master_traps(restart:, fork_worker:)
        MASTER.reject { |sig| (%w[USR1 USR2].include?(sig) && !restart.include?(sig)) || (sig == "URG" && !fork_worker) }
      end

      # What the master does on `sig` (or "backtraces", which its PWR trap queues, or the
      # control server's "stop" (as INT) and "halt" (at once, even while stopping)); nil:
      # nothing. `stopping`: why the cluster is stopping (nil: it is not, "restart": a hot
      # restart); `phased`: a phased restart or refork runs; `logs_redirected`: HUP reopens the
      # logs rather than stopping.
      #
      # A stop asked for during a hot restart wins (nothing is exec'd); a restart asked for
      # while stopping is ignored, as are TTIN/TTOU; a hot restart during a phased one takes
      # over; URG waits for a phased restart or refork to end.
      def self.action(sig, stopping:, phased:, logs_redirected:)
        case sig
        when "HUP"
          return :reopen_logs if logs_redirected

          :stop unless stopping
        when "backtraces" then :backtraces
        when "TTIN" then :add_worker unless stopping
        when "TTOU" then :remove_worker unless stopping
        when "USR1" then :phased_restart unless stopping
        when "USR2" then :hot_restart unless stopping
        when "URG" then :refork unless stopping || phased
        when "TERM", "INT", "stop" then :stop if !stopping || stopping == "restart"
        when "halt" then :halt
        end
      end
    end
  end
end
