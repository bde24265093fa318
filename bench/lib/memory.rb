# frozen_string_literal: true

module Bench
  # Resident memory of a server: its process and every descendant (the master and its workers),
  # as RSS and as PSS (which splits copy-on-write shared pages among the processes sharing them).
  module Memory
    module_function

    def of_tree(root_pid)
      pids = [root_pid] + descendants(root_pid)
      totals = { rss_kib: 0, pss_kib: 0 }
      pids.each do |pid|
        rollup = File.read("/proc/#{pid}/smaps_rollup")
        totals[:rss_kib] += rollup[/^Rss:\s+(\d+) kB/, 1].to_i
        totals[:pss_kib] += rollup[/^Pss:\s+(\d+) kB/, 1].to_i
      rescue Errno::ENOENT, Errno::ESRCH
        next # a worker that exited between the listing and the read
      end
      totals
    end

    def descendants(pid)
      children = Dir.glob("/proc/#{pid}/task/*/children").flat_map { |f| File.read(f).split.map(&:to_i) }
      children + children.flat_map { |c| descendants(c) }
    rescue Errno::ENOENT, Errno::ESRCH
      []
    end
  end
end
