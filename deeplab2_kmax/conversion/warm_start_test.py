"""Fine-tuning starts: deeplab2 full / backbone-only checkpoints and our own, into models
of other class counts; and train.py --init_checkpoint end to end."""

import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.app import configs
from deeplab2_kmax.conversion import convert
from deeplab2_kmax.conversion import deeplab2_checkpoint
from deeplab2_kmax.conversion import fill_rule_checkpoint
from deeplab2_kmax.conversion import label_space
from deeplab2_kmax.conversion import warm_start
from deeplab2_kmax.layers import test_utils
from deeplab2_kmax import model as model_lib

ROOT = configs.REPO_ROOT
MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata",
                        "r50_coco", "manifest.json.gz")
STEM = "encoder/_stem/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def _r50(num_classes):
  configs.parse_config([os.path.join(ROOT, "configs/coco/kmax_r50.gin")],
                       skip_unknown=True, clear=True)
  model = model_lib.build_model(num_classes=num_classes)
  gin.clear_config()
  convert.build_variables(model)
  return model


def _values(model):
  return {p: v.numpy().copy() for p, v in convert.our_variables(model).items()}


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
  prefix = str(tmp_path_factory.mktemp("full") / "ckpt-150000")
  fill_rule_checkpoint.write(fill_rule_checkpoint.load_manifest(MANIFEST), prefix)
  return prefix


def test_full_133_class_checkpoint_into_a_6_class_model(full_checkpoint):
  model = _r50(6)
  fresh = _values(model)
  space = label_space.for_dataset("synthetic", 6, [0, 1, 2])
  report = warm_start.initialize(model, full_checkpoint, space)
  assert report.kind == "deeplab2" and report.class_heads_reset
  assert "the checkpoint has 133 classes, the model 6" in report.table()
  # 7 class heads (kernel + bias) and the semantic classifier: re-initialized.
  assert len(report.new) == 16
  assert all("class_head/" in p or p.startswith("semantic_branch/classifier/")
             for p in report.new)
  assert len(report.restored) == len(fresh) - 16
  after = _values(model)
  for path in report.new:
    np.testing.assert_array_equal(after[path], fresh[path])
  np.testing.assert_array_equal(after["resnet50/stem/conv/kernel"],
                                fill_rule_checkpoint.value(STEM, (7, 7, 3, 64)))
  key = "transformer_decoder/cluster_centers/.ATTRIBUTES/VARIABLE_VALUE"
  np.testing.assert_array_equal(after["transformer_decoder/cluster_centers"],
                                fill_rule_checkpoint.value(key, (1, 128, 256)))


def test_backbone_only_checkpoint_model_garden_keys(tmp_path):
  """An ImageNet ResNet-50 (keys under backbone/_encoder/, with a classifier head and
  optimizer state beside it) fills only the backbone."""
  manifest = [e for e in fill_rule_checkpoint.load_manifest(MANIFEST)
              if e["key"].startswith("encoder/")]
  prefix = str(tmp_path / "imagenet" / "ckpt-1")
  keys = ["backbone/_" + e["key"] for e in manifest]
  tensors = [tf.constant(fill_rule_checkpoint.value(e["key"], e["shape"]))
             for e in manifest]
  keys += ["head/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE",
           "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"]
  tensors += [tf.zeros([2048, 1000]), tf.constant(7, tf.int64)]
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=keys, shape_and_slices=[""] * len(keys),
                    tensors=tensors)
  model = _r50(133)
  fresh = _values(model)
  report = warm_start.initialize(model, prefix, label_space.coco())
  assert not report.class_heads_reset
  assert report.restored and all(p.startswith("resnet50/") for p in report.restored)
  assert len(report.restored) == sum(p.startswith("resnet50/") for p in fresh)
  assert report.skipped == {"not in this model": 1, "optimizer state": 1}
  after = _values(model)
  np.testing.assert_array_equal(after["resnet50/stem/conv/kernel"],
                                fill_rule_checkpoint.value(STEM, (7, 7, 3, 64)))
  np.testing.assert_array_equal(after["transformer_decoder/cluster_centers"],
                                fresh["transformer_decoder/cluster_centers"])
  assert "newly initialized parts:" in report.table()


def test_our_checkpoint_of_another_class_count(tmp_path):
  kwargs = dict(backbone_kwargs=test_utils.TINY_RESNET_KWARGS, **test_utils.TINY_MODEL_KWARGS)
  source = model_lib.build_model(3, **kwargs)
  convert.build_variables(source)
  for i, v in enumerate(source.variables):
    if "seed_generator" not in v.path:
      v.assign(tf.fill(v.shape, float(i % 7) + 0.5))
  prefix = tf.train.Checkpoint(model=source).write(str(tmp_path / "ours" / "ckpt-9"))
  target = model_lib.build_model(5, **kwargs)
  convert.build_variables(target)
  fresh = _values(target)
  report = warm_start.initialize(target, os.path.dirname(prefix), None)
  assert report.kind == "deeplab2-kmax" and report.class_heads_reset
  assert report.new and all("class_head/" in p or "semantic_branch/classifier/" in p
                            for p in report.new)
  theirs, after = _values(source), _values(target)
  for path in report.restored:
    np.testing.assert_array_equal(after[path], theirs[path])
  for path in report.new:
    np.testing.assert_array_equal(after[path], fresh[path])


def test_another_encoder_is_refused(full_checkpoint):
  model = model_lib.build_model(
      3, backbone="convnext_tiny", backbone_kwargs={"depths": (1, 1, 1, 1),
                                                    "dims": (8, 16, 32, 64)},
      **test_utils.TINY_MODEL_KWARGS)
  convert.build_variables(model)
  with pytest.raises(deeplab2_checkpoint.CheckpointError,
                     match="holds a ResNet-50 encoder; the model config builds a "
                           "ConvNeXt-T encoder"):
    warm_start.initialize(model, full_checkpoint, None)


@pytest.mark.slow  # traces the full R50 training step (~1 min on 2 cores)
def test_train_py_init_checkpoint_end_to_end(full_checkpoint, tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  py = sys.executable
  raw, tfr = tmp_path / "raw", tmp_path / "tfr"
  subprocess.run([py, "data/make_synthetic.py", f"--output_dir={raw}", "--num_train=2",
                  "--num_val=1", "--image_size=64"], cwd=ROOT, env=env, check=True,
                 capture_output=True)
  subprocess.run([py, "data/build_coco_tfrecord.py", f"--image_dir={raw}/train",
                  f"--panoptic_json={raw}/annotations/panoptic_train.json",
                  f"--panoptic_dir={raw}/annotations/panoptic_train", f"--output_dir={tfr}",
                  "--split=train", "--num_shards=1", "--num_workers=1"], cwd=ROOT, env=env,
                 check=True, capture_output=True)
  proc = subprocess.run(
      [py, "trainer/train.py", "--gin_file=configs/coco/kmax_r50.gin",
       "--gin_file=configs/coco/recipe.gin", f"--model_dir={tmp_path / 'model'}",
       f"--dataset_info={tfr}/dataset_info.json", f"--train_tfrecord={tfr}/train-*",
       "--train_steps=1", f"--init_checkpoint={full_checkpoint}",
       "--gin_bindings=build_dataset.crop_size = (65, 65)",
       "--gin_bindings=build_dataset.batch_size = 1",
       "--gin_bindings=Trainer.steps_per_loop = 1"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "restored             1312" in proc.stderr
  assert "class-dependent heads re-initialized: the checkpoint has 133 classes, the " \
         "model 6" in proc.stderr
  assert (tmp_path / "model" / "ckpt-1.index").exists()
