"""pyproject.toml: every console script names an importable `entry()` that defines its
flags and runs under core.cli; the installed packages are the library's, not tools/."""
import os
import subprocess
import sys
import tomllib


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
  PROJECT = tomllib.load(_f)
SCRIPTS = PROJECT["project"]["scripts"]


def test_the_scripts_cover_every_command_line_entry():
  targets = set(SCRIPTS.values())
  for module in ("trainer.train", "deeplab2_kmax.app.export", "deeplab2_kmax.app.predict",
                 "deeplab2_kmax.app.evaluate", "data.build_coco_tfrecord",
                 "deeplab2_kmax.tools.convert_deeplab2_checkpoint"):
    assert f"{module}:entry" in targets


def test_every_script_target_imports_in_a_fresh_process():
  """All targets in one process (each command's flags are defined only when its entry
  runs, so importing them together must work); tools/cli_refusals_test.py runs the
  commands themselves."""
  code = ("import importlib\n"
          f"for target in {sorted(SCRIPTS.values())!r}:\n"
          "  module, function = target.split(':')\n"
          "  assert callable(getattr(importlib.import_module(module), function)), target\n"
          "print('ok')\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0 and proc.stdout.split() == ["ok"], proc.stderr[-2000:]


def test_a_script_and_its_thin_entry_print_their_usage_and_flags():
  """--help: the command's docstring and its flags, exit 0, both as the installed
  script would run and as `python -m deeplab2_kmax.predict`."""
  script = ("import sys; sys.argv = ['kmax-predict', '--help']; "
            "from deeplab2_kmax.app.predict import entry; entry()")
  for args in (["-c", script], ["-m", "deeplab2_kmax.predict", "--help"]):
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Panoptic predictions for a folder of images" in proc.stdout
    for flag in ("--saved_model", "--model", "--images", "--output_dir"):
      assert flag + ":" in proc.stdout, flag


def test_installed_packages_exclude_the_repository_tools():
  include = PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
  assert "tools*" not in include and "benchmarks*" not in include
  assert {"deeplab2_kmax*", "data*", "trainer*", "evaluation*"} <= set(include)
