# frozen_string_literal: true

require "helper"
require "open3"

# Catamount's request parser against llhttp (an independent HTTP/1.1 parser, through Python's
# httptools, installed by script/bootstrap): test/support/parser_differential.py sends the same
# generated and mutated request streams (and the smuggling table's vectors) through both, with a
# fixed seed, and fails when Catamount accepts what llhttp refuses or ends a message elsewhere.
# Its output lists every disagreement class with a count; a failure shows the shrunk input.
class TestParserDifferential < Minitest::Test
  parallelize_me!

  DRIVER = File.join(Support::ROOT, "test", "support", "parser_differential.py")
  CASES = 60_000
  # Generous: a run takes a few seconds, but it builds the example first on a shared machine.
  LIMIT = 600

  def test_catamount_is_never_laxer_than_llhttp
    python = Support::ServerTest::PYTHON
    assert File.executable?(python), "#{python} missing: script/bootstrap makes the venv"
    out, status = run_bounded([python, DRIVER, "--cases", CASES.to_s, "--seed", "23"])
    refute_nil status, "the differential run took over #{LIMIT} s:\n#{out}"
    assert status.success?, out
    puts "\n#{out}"
    assert_match(/Catamount was never laxer than llhttp/, out)
  end

  private

  # The driver's output and exit status; status nil when it ran past LIMIT (then it is killed).
  def run_bounded(command)
    Open3.popen2e(*command, chdir: Support::ROOT, pgroup: true) do |stdin, output, wait|
      stdin.close
      reader = Thread.new { output.read }
      unless wait.join(LIMIT)
        Process.kill("KILL", -wait.pid)
        wait.join
        return [reader.value, nil]
      end
      [reader.value, wait.value]
    end
  end
end
