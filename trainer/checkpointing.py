"""Checkpoints (model, optimizer, step[, input iterator]), stop signals, the NaN guard.

DESIGN.md: `tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)` managed by
`tf.train.CheckpointManager` in `model_dir` (prefixes `model_dir/ckpt-<n>`, n = step).
Restarting with the same model_dir restores the latest one; with `iterator` in the
checkpoint the input pipeline resumes at the same element, so a resumed run reproduces
the uninterrupted one exactly (given deterministic ops).

SIGTERM/SIGINT only set a flag (a handler must not run TF ops in the middle of a step);
the training loop polls `StopSignal.requested` between tf.function calls, saves, and exits.
"""

import math
import signal
import threading
from typing import Mapping, Optional

from absl import logging
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
  """A loss became NaN/Inf; the run stops without saving over the last good checkpoint."""


class TrainingInterrupted(Exception):
  """SIGTERM/SIGINT arrived; a checkpoint was saved. `signum` is the signal number."""

  def __init__(self, signum: int, checkpoint: Optional[str]):
    super().__init__(f"stopped by {signal.Signals(signum).name} at checkpoint {checkpoint}")
    self.signum = signum
    self.checkpoint = checkpoint


class CheckpointState:
  """Owns the tf.train.Checkpoint and its manager for one model_dir."""

  def __init__(self, model_dir: str, model, optimizer, step: tf.Variable,
               iterator=None, max_to_keep: int = 3):
    items = {"model": model, "optimizer": optimizer, "step": step}
    if iterator is not None:
      items["iterator"] = iterator
    self.step = step
    self.checkpoint = tf.train.Checkpoint(**items)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, directory=model_dir, max_to_keep=max_to_keep,
        checkpoint_name="ckpt")

  @property
  def latest(self) -> Optional[str]:
    return self.manager.latest_checkpoint

  def restore_latest(self) -> Optional[str]:
    """Restores the newest checkpoint in model_dir, if any; returns its prefix."""
    path = self.manager.latest_checkpoint
    if path is None:
      logging.info("no checkpoint in %s: starting from scratch", self.manager.directory)
      return None
    status = self.checkpoint.restore(path)
    status.assert_existing_objects_matched()
    logging.info("restored %s (step %d)", path, int(self.step.numpy()))
    return path

  def save(self) -> str:
    step = int(self.step.numpy())
    path = self.manager.save(checkpoint_number=step)
    logging.info("saved checkpoint %s", path)
    return path

  def saved_at(self, step: int) -> bool:
    return any(p.endswith(f"ckpt-{step}") for p in self.manager.checkpoints)


def check_finite(losses: Mapping[str, float], step: int, last_good: Optional[str]) -> None:
  """Raises NonFiniteLossError naming the bad terms, the step and the checkpoint kept."""
  bad = {k: v for k, v in losses.items() if not math.isfinite(float(v))}
  if bad:
    terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
    raise NonFiniteLossError(
        f"non-finite loss at step {step} ({terms}); stopping without saving. The last "
        f"good checkpoint is {last_good or 'none (no checkpoint was written yet)'}. "
        "Lower the learning rate (build_optimizer.base_learning_rate), enable gradient "
        "clipping (Trainer.clip_gradient_norm) or check the input data.")


class StopSignal:
  """Context manager: SIGTERM/SIGINT set `requested` instead of killing the process.

  A second signal of the same kind falls through to the previous handler (so a second
  Ctrl-C still aborts at once). Only installs handlers on the main thread.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._signals = signals
    self._previous = {}
    self.requested: Optional[int] = None

  def _handle(self, signum, frame):
    if self.requested is not None:
      previous = self._previous.get(signum)
      if callable(previous):
        previous(signum, frame)
      return
    self.requested = signum
    logging.warning("received %s: saving a checkpoint after the current steps",
                    signal.Signals(signum).name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self._signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
    return False
