"""Checkpoint safety and exact resume: the ckpt-N files decide where training resumes, an
unreadable newest checkpoint falls back to the newest readable one, nothing is written
over, and a run killed at any point resumes to the bits of the uninterrupted run."""
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import optimizer as optimizer_lib
from trainer import testing_utils
from trainer import train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkpoint_tensors(prefix):
  """Every tensor of a checkpoint except the input iterator's (a variant)."""
  reader = tf.train.load_checkpoint(str(prefix))
  return {name: reader.get_tensor(name)
          for name, dtype in reader.get_variable_to_dtype_map().items()
          if dtype != tf.variant}


def assert_same_tensors(a, b):
  ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
  assert sorted(ta) == sorted(tb) and len(ta) > 4
  differ = [k for k in ta if not np.array_equal(ta[k], tb[k])]
  assert not differ, f"{len(differ)} of {len(ta)} tensors differ, e.g. {differ[:3]}"


def _trainer(model_dir, **kwargs):
  keras.utils.set_random_seed(1)
  model = testing_utils.make_model(width=kwargs.pop("width", 8))
  optimizer = optimizer_lib.build_optimizer(total_steps=8, base_learning_rate=0.05,
                                            warmup_steps=2)
  kwargs = dict(dict(steps_per_loop=2, checkpoint_every=2, max_to_keep=10), **kwargs)
  return train_lib.Trainer(model, testing_utils.tiny_loss, optimizer,
                           tf.distribute.get_strategy(), str(model_dir), progress=False,
                           **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A model_dir trained to step 8 with ckpt-2..8, and the bytes of its files."""
  model_dir = tmp_path_factory.mktemp("trained")
  _trainer(model_dir).train(testing_utils.make_dataset(), 8)
  return model_dir


def _copy(src, dst):
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(src, dst)
  return dst


def _bytes(model_dir):
  return {os.path.relpath(p, model_dir): open(p, "rb").read()
          for p in sorted(glob.glob(f"{model_dir}/ckpt-*"))}


@pytest.mark.parametrize("state", ["deleted", "garbled", "empty"])
def test_checkpoint_files_decide_not_the_state_file(trained, tmp_path, state):
  model_dir = _copy(trained, tmp_path / "m")
  before = _bytes(model_dir)
  state_file = model_dir / "checkpoint"
  if state == "deleted":
    state_file.unlink()
  else:
    state_file.write_text("" if state == "empty" else "model_checkpoint_path: {{{ garbage")
  trainer = _trainer(model_dir)
  trainer.train(testing_utils.make_dataset(), 8)
  assert int(trainer.step.numpy()) == 8            # resumed from ckpt-8: nothing to train
  assert _bytes(model_dir) == before               # nothing overwritten
  assert tf.train.get_checkpoint_state(str(model_dir)).model_checkpoint_path.endswith(
      "ckpt-8")                                     # the state file agrees again


def test_unreadable_newest_checkpoint_falls_back_with_a_warning(trained, tmp_path, caplog):
  model_dir = _copy(trained, tmp_path / "m")
  data = model_dir / "ckpt-8.data-00000-of-00001"
  damaged = data.read_bytes()[:100]
  data.write_bytes(damaged)
  with caplog.at_level(logging.WARNING):
    trainer = _trainer(model_dir)
    trainer.train(testing_utils.make_dataset(), 8)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(f"{model_dir}/ckpt-8: unreadable checkpoint" in w and "ckpt-6" in w
             for w in warnings), warnings
  # the damaged files are kept aside; steps 7-8 were trained again, to the same bits
  assert (model_dir / "ckpt-8.data-00000-of-00001.unreadable").read_bytes() == damaged
  assert_same_tensors(trained / "ckpt-8", model_dir / "ckpt-8")


def test_no_readable_checkpoint_is_refused_unless_overwrite(trained, tmp_path):
  model_dir = _copy(trained, tmp_path / "m")
  for path in glob.glob(f"{model_dir}/ckpt-*.data-*"):
    with open(path, "r+b") as f:
      f.truncate(10)
  before = _bytes(model_dir)
  with pytest.raises(ValueError, match=rf"^--model_dir={model_dir}: none of its 4 "
                     r"checkpoints can be restored .*ckpt-8: unreadable.*--overwrite"):
    _trainer(model_dir).train(testing_utils.make_dataset(), 8)
  assert _bytes(model_dir) == before
  trainer = _trainer(model_dir, overwrite=True)
  trainer.train(testing_utils.make_dataset(), 4)
  assert int(trainer.step.numpy()) == 4
  for name, data in before.items():              # the old files are kept, renamed
    assert (model_dir / f"{name}.unreadable").read_bytes() == data


def test_save_cut_short_by_a_kill_is_set_aside_not_refused(trained, tmp_path):
  """Killed while writing its first checkpoint: `ckpt-2_temp/` left, an empty index."""
  model_dir = tmp_path / "m"
  (model_dir / "ckpt-2_temp").mkdir(parents=True)
  (model_dir / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
  (model_dir / "ckpt-2.index").write_bytes(b"")
  (model_dir / "ckpt-2.data-00000-of-00001").write_bytes(b"partial")
  _trainer(model_dir).train(testing_utils.make_dataset(), 8)
  assert (model_dir / "ckpt-2.index.unreadable").read_bytes() == b""
  assert (model_dir / "ckpt-2_temp.unreadable").is_dir()
  assert_same_tensors(trained / "ckpt-8", model_dir / "ckpt-8")


def test_checkpoint_of_another_model_is_one_clear_refusal(trained, tmp_path):
  model_dir = _copy(trained, tmp_path / "m")
  before = _bytes(model_dir)
  with pytest.raises(ValueError, match=r"ckpt-8: does not match the model .*shape"):
    _trainer(model_dir, width=6).train(testing_utils.make_dataset(), 8)
  assert _bytes(model_dir) == before


def _run(model_dir, steps, extra=()):
  cmd = [sys.executable, "-m", "trainer.testing_utils", f"--model_dir={model_dir}",
         f"--steps={steps}", "--dropout=0.3", "--checkpoint_every=4", *extra]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def _history(model_dir):
  lines = (model_dir / "train" / "history.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(l).items() if "per_second" not in k} for l in lines]


def test_killed_run_resumes_to_the_uninterrupted_bits(tmp_path):
  steps = 12
  reference = _run(tmp_path / "a", steps)
  out, _ = reference.communicate(timeout=120)
  assert reference.returncode == 0, out

  # Killed (SIGKILL: no chance to save) after logging steps past its last checkpoint.
  proc = _run(tmp_path / "b", steps, ["--sleep_per_loop=0.7"])
  deadline = time.time() + 90
  history = tmp_path / "b" / "train" / "history.jsonl"
  while not (history.exists() and '"step": 6' in history.read_text()):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert not (tmp_path / "b" / "ckpt-8.index").exists()

  resumed = _run(tmp_path / "b", steps)
  out, _ = resumed.communicate(timeout=120)
  assert resumed.returncode == 0, out
  assert_same_tensors(tmp_path / "a" / f"ckpt-{steps}", tmp_path / "b" / f"ckpt-{steps}")
  assert [h["step"] for h in _history(tmp_path / "b")] == list(range(2, steps + 1, 2))
  assert _history(tmp_path / "a") == _history(tmp_path / "b")
