"""deeplab2_kmax/core/cli.py: refusals are one line `error: <file/flag>: <what>`, exit status 2, no
traceback (unless --verbose); bugs keep their traceback."""
import os
import re
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def refusal_line(proc, pattern: str, code: int = 2) -> str:
  """Asserts `proc` (a finished subprocess.run with text output) was refused: exit
  status `code`, no traceback, and the last stderr line, the only one starting with
  'error: ', matches `pattern`. (TensorFlow's own start-up log lines may precede it.)"""
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert lines and [l for l in lines if l.startswith("error: ")] == lines[-1:], lines[-5:]
  assert re.search(pattern, lines[-1]), lines[-1]
  return lines[-1]


_SCRIPT = textwrap.dedent("""
    import sys
    from absl import flags
    from deeplab2_kmax.core import cli
    flags.DEFINE_string("path", None, "a path")
    flags.mark_flag_as_required("path")
    def main(argv):
      if flags.FLAGS.path == "bug":
        raise KeyError("a real bug")
      if flags.FLAGS.path == "missing":
        open("/nonexistent/dir/file")
      raise cli.UserError(f"--path={flags.FLAGS.path}: is refused\\n  (second line)")
    cli.run(main)
""")


def _run(*args):
  return subprocess.run([sys.executable, "-c", _SCRIPT, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)


def test_refusals_are_one_line_and_bugs_keep_their_traceback():
  assert refusal_line(_run("--path=x"), "") == "error: --path=x: is refused (second line)"
  refusal_line(_run(), r"^error: --path: required flag not set$")
  refusal_line(_run("--path=x", "--nope=1"), r"^error: .*nope")
  refusal_line(_run("--path=missing"),
               r"^error: /nonexistent/dir/file: No such file or directory$")
  verbose = _run("--path=x", "--verbose")
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr
  bug = _run("--path=bug")
  assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError" in bug.stderr
