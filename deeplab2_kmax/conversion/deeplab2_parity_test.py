"""deeplab2 checkpoints convert into our model and reproduce deeplab2's own outputs.

Each fixture (testdata/README.md) holds the variable keys deeplab2 writes for one of its
configs and deeplab2's outputs for a fixed input with deterministic weights. The tests
write such a checkpoint, convert it with the CLI (as a user would) and compare: every
k-means assignment identical, logits and embeddings within 1e-3 of the reference's
scale, post-processed panoptic maps identical.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile

import gin
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.app import configs
from deeplab2_kmax.conversion import convert
from deeplab2_kmax.conversion import deeplab2_checkpoint
from deeplab2_kmax.conversion import fill_rule_checkpoint
from deeplab2_kmax.conversion import label_space
from deeplab2_kmax.conversion import parity
from deeplab2_kmax import model as model_lib

ROOT = configs.REPO_ROOT
TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
CLI = "deeplab2_kmax.tools.convert_deeplab2_checkpoint"
# fixture: (config, --num_classes)
FIXTURES = {
    "r50_coco": ("configs/coco/kmax_r50.gin", 133),
    "r50_cityscapes": ("configs/cityscapes/kmax_r50.gin", 19),
    "r50_ade20k": ("configs/ade20k/kmax_r50.gin", 150),
    "maxs_coco": ("configs/coco/kmax_maxs.gin", 133),
    "convnext_tiny_coco": ("configs/coco/kmax_convnext_tiny.gin", 133),
}


def _checkpoint(tmp_path_factory, name):
  prefix = str(tmp_path_factory.mktemp(name) / "ckpt-1000")
  manifest = fill_rule_checkpoint.load_manifest(
      os.path.join(TESTDATA, name, "manifest.json.gz"))
  fill_rule_checkpoint.write(manifest, prefix)
  return prefix


@pytest.fixture(scope="module")
def r50_checkpoint(tmp_path_factory):
  return _checkpoint(tmp_path_factory, "r50_coco")


def run_cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", CLI, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def _convert(prefix, name, output_dir, *extra):
  config, num_classes = FIXTURES[name]
  return run_cli(f"--deeplab2_checkpoint={prefix}", f"--gin_file={config}",
                 f"--num_classes={num_classes}", f"--output_dir={output_dir}", *extra)


def _parse(config):
  configs.parse_config([os.path.join(ROOT, config)], skip_unknown=True, clear=True)


def test_r50_coco_matches_deeplab2(r50_checkpoint, tmp_path):
  reference = os.path.join(TESTDATA, "r50_coco", "reference_129.npz")
  dump = str(tmp_path / "ours.npz")
  result = _convert(r50_checkpoint, "r50_coco", tmp_path / "out",
                    f"--reference={reference}", f"--dump_outputs={dump}")
  assert result.returncode == 0, result.stdout + result.stderr
  assert "converted 1184 deeplab2 variables (ResNet-50 encoder, coco classes)" in result.stdout
  assert "29 of 29 outputs within tolerance" in result.stdout
  # The checkpoint is one of ours: conversion.json, the deeplab2 step in its name.
  summary = json.loads((tmp_path / "out" / "conversion.json").read_text())
  assert summary["checkpoint"] == str(tmp_path / "out" / "ckpt-0")  # no global_step
  # Our dump has deeplab2's names and layouts; compare it ourselves too.
  with np.load(dump) as ours, np.load(reference) as ref:
    for key in ref.files:
      assert ours[key].shape == ref[key].shape, key
    rows = parity.compare(dict(ours), dict(ref))
    assert all(r.ok for r in rows), [r.line() for r in rows if not r.ok]
    assert np.array_equal(ours["final/panoptic_pred"], ref["final/panoptic_pred"])
    for i in range(6):
      assert np.array_equal(ours[f"aux{i}/cluster_assignment"],
                            ref[f"aux{i}/cluster_assignment"])
    # The fixture is not trivial: segments survive the merge and clusters are used.
    assert len(np.unique(ref["final_no_area_limit/panoptic_pred"])) >= 3
    assert len(np.unique(ref["aux4/cluster_assignment"])) > 10


@pytest.mark.parametrize("name", ["r50_cityscapes", "r50_ade20k"])
def test_class_orders_of_cityscapes_and_ade20k_match_deeplab2(name, tmp_path_factory):
  prefix = _checkpoint(tmp_path_factory, name)
  reference = os.path.join(TESTDATA, name, "reference_129.npz")
  out = tmp_path_factory.mktemp(name + "_out")
  result = _convert(prefix, name, out, f"--reference={reference}")
  assert result.returncode == 0, result.stdout + result.stderr
  assert "within tolerance" in result.stdout and "FAIL" not in result.stdout
  # The merge too (Cityscapes: stride-2 mask logits, MaskWiseMerger(mask_stride=2)).
  for key in parity.PANOPTIC_KEYS:
    assert f"ok   {key}: 0 differ" in result.stdout, key
  shutil.rmtree(os.path.dirname(prefix))


@pytest.mark.parametrize("name", ["maxs_coco", "convnext_tiny_coco"])
def test_every_deeplab2_variable_has_one_place(name):
  """The MaX-S and ConvNeXt-T key maps: every key mapped, every variable of ours filled
  exactly once, shapes equal (values are checked by the documented parity run)."""
  config, num_classes = FIXTURES[name]
  _parse(config)
  model = model_lib.build_model(num_classes=num_classes)
  convert.build_variables(model)
  gin.clear_config()
  manifest = fill_rule_checkpoint.load_manifest(
      os.path.join(TESTDATA, name, "manifest.json.gz"))
  fake = _ShapesOnly({e["key"]: tuple(e["shape"]) for e in manifest})
  plan = convert.plan_conversion(model, fake, label_space.coco())
  assert plan.problems() == []
  assert len(plan.restored_paths) == len(convert.our_variables(model))


class _ShapesOnly:
  """The part of Deeplab2Checkpoint that planning reads."""

  def __init__(self, shapes):
    self.shapes, self.skipped, self.source = shapes, {}, "manifest"


def test_wrong_config_is_refused_in_one_line(r50_checkpoint, tmp_path):
  result = run_cli(f"--deeplab2_checkpoint={r50_checkpoint}",
                   "--gin_file=configs/coco/kmax_convnext_tiny.gin", "--num_classes=133",
                   f"--output_dir={tmp_path / 'out'}")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {r50_checkpoint}: this checkpoint holds a ResNet-50 encoder; the model "
      "config builds a ConvNeXt-T encoder")
  assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def r50_model():
  _parse("configs/coco/kmax_r50.gin")
  model = model_lib.build_model(num_classes=133)
  convert.build_variables(model)
  gin.clear_config()
  return model


def test_other_class_count_is_refused(r50_checkpoint, r50_model):
  with deeplab2_checkpoint.open_checkpoint(r50_checkpoint) as checkpoint:
    with pytest.raises(deeplab2_checkpoint.CheckpointError) as error:
      convert.convert_into(r50_model, checkpoint, label_space.cityscapes())
  message = str(error.value)
  assert message.startswith(f"{r50_checkpoint} does not match the model: the class heads "
                            "do not match the model's class count: ")
  assert "\n" not in message


def test_truncated_checkpoint_is_refused(r50_checkpoint, r50_model, tmp_path):
  for suffix in (".index", ".data-00000-of-00001"):
    shutil.copy(r50_checkpoint + suffix, tmp_path / ("ckpt-1000" + suffix))
  data = tmp_path / "ckpt-1000.data-00000-of-00001"
  with open(data, "r+b") as f:
    f.truncate(os.path.getsize(data) // 2)
  before = [v.numpy().copy() for v in r50_model.variables[:5]]
  with deeplab2_checkpoint.open_checkpoint(str(tmp_path)) as checkpoint:
    with pytest.raises(deeplab2_checkpoint.CheckpointError,
                       match=rf"^{tmp_path}: variable .* cannot be read; the checkpoint "
                       "is truncated or corrupt"):
      convert.convert_into(r50_model, checkpoint, label_space.coco())
  # Nothing was assigned: every value is read before the first assignment.
  for v, old in zip(r50_model.variables[:5], before):
    np.testing.assert_array_equal(v.numpy(), old)


def test_our_own_checkpoint_is_not_taken_for_a_deeplab2_one(r50_model, tmp_path):
  prefix = tf.train.Checkpoint(model=r50_model).write(str(tmp_path / "ours" / "ckpt-1"))
  with deeplab2_checkpoint.open_checkpoint(prefix) as checkpoint:
    with pytest.raises(deeplab2_checkpoint.CheckpointError,
                       match="a checkpoint of this project"):
      convert.plan_conversion(r50_model, checkpoint, label_space.coco())


def test_archive_folder_and_prefix_inputs(tmp_path):
  manifest = fill_rule_checkpoint.load_manifest(
      os.path.join(TESTDATA, "r50_coco", "manifest.json.gz"))[:40]
  prefix = str(tmp_path / "train" / "ckpt-1000")
  fill_rule_checkpoint.write(manifest, prefix)
  archive = tmp_path / "kmax_r50.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(tmp_path / "train", arcname="kmax_r50")
  with deeplab2_checkpoint.open_checkpoint(str(archive)) as checkpoint:
    assert len(checkpoint.shapes) == 40
    extracted = checkpoint.prefix
    key = manifest[0]["key"]
    np.testing.assert_array_equal(checkpoint.read(key),
                                  fill_rule_checkpoint.value(key, manifest[0]["shape"]))
  assert not os.path.exists(extracted + ".index")  # the temporary copy is gone
  for path in (str(tmp_path / "train"), prefix, prefix + ".index"):
    with deeplab2_checkpoint.open_checkpoint(path) as checkpoint:
      assert checkpoint.prefix == prefix


def test_archive_member_outside_the_folder_is_refused(tmp_path):
  archive = tmp_path / "evil.tar.gz"
  payload = tmp_path / "payload"
  payload.write_text("x")
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(payload, arcname="../../escaped.index")
  with pytest.raises(deeplab2_checkpoint.CheckpointError, match="outside the extraction"):
    deeplab2_checkpoint.open_checkpoint(str(archive))
  assert not (tmp_path.parent.parent / "escaped.index").exists()


def test_missing_or_foreign_input_is_one_line(tmp_path):
  with pytest.raises(deeplab2_checkpoint.CheckpointError, match="no such checkpoint"):
    deeplab2_checkpoint.open_checkpoint(str(tmp_path / "nothing" / "ckpt-5"))
  with pytest.raises(deeplab2_checkpoint.CheckpointError, match="no checkpoint"):
    deeplab2_checkpoint.open_checkpoint(str(tmp_path))
  junk = tmp_path / "junk.index"
  junk.write_bytes(b"not a checkpoint")
  with pytest.raises(deeplab2_checkpoint.CheckpointError,
                     match="not a readable TensorFlow checkpoint"):
    deeplab2_checkpoint.open_checkpoint(str(junk))


def test_bare_convnext_imagenet_keys_fill_the_backbone():
  """deeplab2 loads its ConvNeXt ImageNet weights with Keras `load_weights` on the bare
  encoder: the same keys without `encoder/`."""
  _parse("configs/coco/kmax_convnext_tiny.gin")
  model = model_lib.build_model(num_classes=133)
  convert.build_variables(model)
  gin.clear_config()
  manifest = fill_rule_checkpoint.load_manifest(
      os.path.join(TESTDATA, "convnext_tiny_coco", "manifest.json.gz"))
  bare = {e["key"][len("encoder/"):]: tuple(e["shape"]) for e in manifest
          if e["key"].startswith("encoder/")}
  plan = convert.plan_conversion(model, _ShapesOnly(bare), label_space.coco())
  assert not plan.unmapped and not plan.mismatched
  backbone = [p for p in convert.our_variables(model) if p.startswith("convnext_tiny/")]
  assert plan.restored_paths == sorted(backbone) and len(backbone) == len(bare)
