# frozen_string_literal: true

# The Linux scheduling policy of each thread of the process serving the request
# (test_reactor_scheduling.rb): one line per thread, "name policy", where the serving thread is
# named "serving" and the process's first thread "main", and policy is the number in field 41 of
# /proc/<tid>/stat (0 SCHED_OTHER, 3 SCHED_BATCH, 5 SCHED_IDLE).
def policy(stat)
  # Fields after the command name, which ends at the last ')', start at field 3.
  Integer(stat[(stat.rindex(")") + 2)..].split[41 - 3])
end

def name_of(task, serving)
  tid = Integer(File.basename(task))
  return "serving" if tid == serving
  return "main" if tid == Process.pid

  File.read("#{task}/comm").strip
end

run lambda { |_env|
  serving = Integer(File.basename(File.readlink("/proc/thread-self")))
  lines = Dir.glob("/proc/self/task/*").filter_map do |task|
    "#{name_of(task, serving)} #{policy(File.read("#{task}/stat"))}\n"
  rescue SystemCallError
    nil # a thread that ended meanwhile
  end
  [200, { "content-type" => "text/plain" }, lines.sort]
}
