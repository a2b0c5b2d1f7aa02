"""Tests for the numbered version folders every export writes."""
import os

import pytest

from deeplab2_kmax.core import versions
from deeplab2_kmax.core.cli import UserError


def test_next_free_number_and_staging_renamed(tmp_path):
  base = str(tmp_path / "export")
  os.makedirs(os.path.join(base, "3"))
  os.makedirs(os.path.join(base, "notes"))
  assert versions.numbered(base) == [3]
  with versions.new_version(base, None, "--output_dir=x") as (staging, final):
    assert final == os.path.join(base, "4")
    with open(os.path.join(staging, "model.onnx"), "w") as f:
      f.write("m")
    os.rename(staging, final)
  assert sorted(os.listdir(base)) == ["3", "4", "notes"]
  assert os.listdir(os.path.join(base, "4")) == ["model.onnx"]


def test_failed_export_leaves_no_staging_folder(tmp_path):
  base = str(tmp_path)
  with pytest.raises(RuntimeError, match="converter failed"):
    with versions.new_version(base, 2, "--output_dir=x") as (staging, _):
      open(os.path.join(staging, "half"), "w").close()
      raise RuntimeError("converter failed")
  assert os.listdir(base) == []


def test_existing_or_non_positive_version_is_refused(tmp_path):
  base = str(tmp_path)
  os.makedirs(os.path.join(base, "1"))
  with pytest.raises(UserError, match=r"^--output_dir=out: version 1 already exists \("):
    with versions.new_version(base, 1, "--output_dir=out"):
      pass
  with pytest.raises(UserError, match=r"^--version=0: must be >= 1$"):
    with versions.new_version(base, 0, "--output_dir=out"):
      pass
  assert os.listdir(base) == ["1"]
