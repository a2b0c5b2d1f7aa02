"""The Bazel BUILD file parses and has one py_test per *_test.py file in the tree."""
import os
import shutil
import subprocess

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGES = ("deeplab2_kmax", "data", "trainer", "evaluation", "tools")


def _test_files():
  found = set()
  for pkg in _PACKAGES:
    for dirpath, _, files in os.walk(os.path.join(_ROOT, pkg)):
      for name in files:
        if name.endswith("_test.py"):
          rel = os.path.relpath(os.path.join(dirpath, name), _ROOT)
          found.add(rel[:-3].replace(os.sep, "__"))
  return found


def _bazel_query(expression):
  bazel = shutil.which("bazel")
  if bazel is None:
    pytest.skip("bazel is not installed (Debian: apt-get install bazel-bootstrap)")
  result = subprocess.run(
      [bazel, "--batch", "query", expression, "--output=label"],
      cwd=_ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return {line.strip()[3:] for line in result.stdout.splitlines()
          if line.startswith("//:")}


def test_every_test_file_is_a_py_test_target():
  targets = _bazel_query("kind(py_test, //...)")
  expected = _test_files()
  assert expected, "no *_test.py files found"
  assert targets == expected


def test_every_package_is_a_py_library():
  targets = _bazel_query("kind(py_library, //...)")
  assert set(_PACKAGES) <= targets
