"""app.checkpoints: the ckpt-N files decide, damaged ones are named, a mismatch is one
line without TensorFlow's warning per unrestored value (evaluate.py printed ~860)."""
import gc
import logging

import keras
import pytest
import tensorflow as tf

from deeplab2_kmax.app import checkpoints


def _model(width):
  model = keras.Sequential([keras.layers.Conv2D(width, 3), keras.layers.Conv2D(2, 1)])
  model(tf.zeros([1, 8, 8, 3]))
  return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """ckpt-2/4/10 of a model + optimizer, written as the trainer does."""
  folder = tmp_path_factory.mktemp("m")
  model = _model(4)
  optimizer = keras.optimizers.Adam()
  optimizer.build(model.trainable_variables)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer),
                                       str(folder), 5, checkpoint_name="ckpt")
  for step in (2, 4, 10):
    manager.save(checkpoint_number=step)
  return folder


def test_numbered_ignores_the_state_file(model_dir):
  (model_dir / "checkpoint").rename(model_dir / "checkpoint.moved")
  try:
    assert [n for n, _ in checkpoints.numbered(str(model_dir))] == [10, 4, 2]
    assert checkpoints.newest_readable(str(model_dir)).endswith("ckpt-10")
  finally:
    (model_dir / "checkpoint.moved").rename(model_dir / "checkpoint")


def test_damaged_newest_is_named_and_skipped(model_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  folder = shutil.copytree(model_dir, tmp_path / "m")
  data = folder / "ckpt-10.data-00000-of-00001"
  data.write_bytes(data.read_bytes()[:50])
  with pytest.raises(checkpoints.CheckpointUnreadableError,
                     match=rf"^{folder}/ckpt-10: unreadable checkpoint"):
    checkpoints.check_readable(str(folder / "ckpt-10"))
  warnings = []
  assert checkpoints.newest_readable(str(folder), warnings.append).endswith("ckpt-4")
  assert len(warnings) == 1 and "ckpt-10: unreadable" in warnings[0]
  assert checkpoints.resolve_checkpoint(str(folder)).endswith("ckpt-4")


def test_mismatch_is_one_line_without_a_warning_per_value(model_dir, caplog):
  prefix = str(model_dir / "ckpt-10")
  with caplog.at_level(logging.WARNING):
    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=rf"^{prefix}: does not match the model .*shape") as err:
      checkpoints.restore(tf.train.Checkpoint(model=_model(6)), prefix, partial=True)
    gc.collect()
  assert "\n" not in str(err.value)
  assert not [r for r in caplog.records if "could not be found" in r.getMessage()
              or "unrestored values" in r.getMessage()], len(caplog.records)
  # the matching model restores (the optimizer's values are not needed)
  checkpoints.restore(tf.train.Checkpoint(model=_model(4)), prefix, partial=True)


def test_restore_model_reads_the_checkpoint_once(model_dir, monkeypatch):
  """resolve_checkpoint reads every tensor (CRC check) once; restore_resolved, for a
  prefix already resolved (load_predictor, evaluate.py), does not read them again."""
  checked = []
  real_check = checkpoints.check_readable
  monkeypatch.setattr(checkpoints, "check_readable",
                      lambda prefix: checked.append(prefix) or real_check(prefix))
  model = _model(4)
  prefix = checkpoints.restore_model(model, str(model_dir))
  assert prefix.endswith("ckpt-10") and checked == [prefix]
  reference = _model(4)
  tf.train.Checkpoint(model=reference).read(prefix).expect_partial()
  for a, b in zip(model.variables, reference.variables):
    assert (a.numpy() == b.numpy()).all()
  other = _model(4)
  assert checkpoints.restore_resolved(other, prefix) == prefix
  assert checked == [prefix]
  for a, b in zip(model.variables, other.variables):
    assert (a.numpy() == b.numpy()).all()
