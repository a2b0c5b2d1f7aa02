"""train.py: dataset_info, data and checkpoints must agree (one line when they do not);
the real tiny model resumes to the bits of the uninterrupted run."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.core.cli_test import refusal_line
from data import converter
from data import input_pipeline
from data import make_synthetic
from deeplab2_kmax.core.dataset_info import DatasetInfo
from trainer.resume_safety_test import assert_same_tensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "synthetic", "kmax_tiny.gin")
SMALL = ["--gin_bindings=build_dataset.crop_size = (65, 65)",
         "--gin_bindings=build_dataset.batch_size = 2",
         "--gin_bindings=Trainer.steps_per_loop = 2",
         "--gin_bindings=Trainer.checkpoint_every = 2",
         "--gin_bindings=Trainer.max_to_keep = 10"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  for split, n in (("train", 6), ("val", 2)):
    make_synthetic.write_split(str(root / "raw"), split, n, 0, 64)
    converter.convert_coco_panoptic(
        str(root / "raw" / split), str(root / "raw" / "annotations" / f"panoptic_{split}.json"),
        str(root / "raw" / "annotations" / f"panoptic_{split}"), str(root / "tfr"), split, 1,
        dataset_name="synthetic")
  return root / "tfr"


def _train(*args, timeout=600):
  return subprocess.run([sys.executable, "trainer/train.py", f"--gin_file={TINY}", *SMALL,
                         *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def _four_classes(info_path, out_path):
  obj = json.load(open(info_path))
  obj["categories"] = obj["categories"][:4]
  obj["num_classes"] = 4
  out_path.write_text(json.dumps(obj))


def test_dataset_info_of_other_class_count_than_the_shards(shards, tmp_path):
  _four_classes(shards / "dataset_info.json", tmp_path / "info4.json")
  proc = _train(f"--model_dir={tmp_path / 'm'}", f"--dataset_info={tmp_path / 'info4.json'}",
                f"--train_tfrecord={shards}/train-*", "--train_steps=2")
  refusal_line(proc, r"^error: --dataset_info=.*info4\.json: 4 classes, .* but the shards "
               r"of --train_tfrecord in .* were converted with 6 classes")
  assert not os.path.exists(tmp_path / "m" / "ckpt-2.index")


def test_edited_dataset_info_beside_the_shards_is_caught(shards, tmp_path):
  edited = shutil.copytree(shards, tmp_path / "tfr")   # the case: info says 4
  _four_classes(shards / "dataset_info.json", edited / "dataset_info.json")
  proc = _train(f"--model_dir={tmp_path / 'm'}", f"--dataset_info={edited}/dataset_info.json",
                f"--train_tfrecord={edited}/train-*", "--train_steps=2")
  refusal_line(proc, r"4 classes.* converted with 6 classes.*conversion_train\.json")


def test_labels_beyond_dataset_info_stop_the_pipeline_naming_the_image(shards, tmp_path):
  _four_classes(shards / "dataset_info.json", tmp_path / "info4.json")
  info = DatasetInfo.load(str(tmp_path / "info4.json"))
  dataset = input_pipeline.build_dataset(f"{shards}/train-*", info, is_training=False,
                                         batch_size=1, crop_size=(65, 65))
  with pytest.raises(tf.errors.InvalidArgumentError) as err:
    for _ in dataset:
      pass
  error = input_pipeline.data_error(err.value, {"--train_tfrecord": f"{shards}/train-*"},
                                    str(tmp_path / "info4.json"))
  assert str(error).startswith(f"--dataset_info={tmp_path / 'info4.json'}: image ")
  assert "in its label, which does not match dataset_info (4 classes" in str(error)


def test_model_dir_trained_with_another_dataset_info(shards, tmp_path):
  (tmp_path / "m").mkdir()
  _four_classes(shards / "dataset_info.json", tmp_path / "m" / "dataset_info.json")
  (tmp_path / "m" / "ckpt-2.index").write_bytes(b"")  # checked before it is read
  proc = _train(f"--model_dir={tmp_path / 'm'}", f"--dataset_info={shards}/dataset_info.json",
                f"--eval_tfrecord={shards}/val-*", "--mode=eval")
  refusal_line(proc, r"^error: --dataset_info=.*: 6 classes, .* but the checkpoints in "
               rf"--model_dir={tmp_path / 'm'} were made with 4 classes")


@pytest.mark.slow  # two real tiny-model trainings (~70 s on 2 cores)
def test_real_model_resume_is_bit_identical(shards, tmp_path):
  """Uninterrupted 6 steps vs. a copy of its model_dir as a kill after step 6 was logged
  but only ckpt-2 was kept would leave it (no state file, history up to step 6; no
  --seed, so the kept seed is what makes data order and augmentation repeat)."""
  common = [f"--dataset_info={shards}/dataset_info.json",
            f"--train_tfrecord={shards}/train-*", "--train_steps=6"]
  proc = _train(f"--model_dir={tmp_path / 'a'}", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  os.makedirs(tmp_path / "b")
  for name in os.listdir(tmp_path / "a"):
    if name.startswith("ckpt-2.") or name in ("seed.json", "dataset_info.json", "train"):
      src = tmp_path / "a" / name
      (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / "b" / name)
  proc = _train(f"--model_dir={tmp_path / 'b'}", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "restored" in proc.stderr and "ckpt-2" in proc.stderr
  assert_same_tensors(tmp_path / "a" / "ckpt-6", tmp_path / "b" / "ckpt-6")
  history = [[{k: v for k, v in json.loads(l).items() if "per_second" not in k}
              for l in open(tmp_path / d / "train" / "history.jsonl")] for d in "ab"]
  assert [h["step"] for h in history[1]] == [2, 4, 6] and history[0] == history[1]
