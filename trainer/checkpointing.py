"""Checkpoints (model, optimizer, step[, input iterator]), stop signals, the NaN guard.

DESIGN.md: `tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)` managed by
`tf.train.CheckpointManager` in `model_dir` (prefixes `model_dir/ckpt-<n>`, n = step),
plus `rng` (the state of every random generator of the model, e.g. dropout) and, when
given, `iterator` (the input pipeline's position).
Restarting with the same model_dir restores the newest readable `ckpt-<n>`: the files
decide, not the `checkpoint` state file (rewritten from them). A newer checkpoint that
does not read is named in a warning and its files are renamed `*.unreadable`, so that
nothing is written over them; when none reads, the run refuses to start from scratch
unless `overwrite` (a save cut short by a kill, which leaves `<prefix>_temp/`, holds
nothing and is only set aside). With rng and iterator restored, a resumed run reproduces the
uninterrupted one exactly (given deterministic ops).

SIGTERM/SIGINT only set a flag (a handler must not run TF ops in the middle of a step);
the training loop polls `StopSignal.requested` between tf.function calls, saves, and exits.
"""

import math
import os
import signal
import threading
from typing import Mapping, Optional

from absl import logging
import tensorflow as tf

from deeplab2_kmax.app import checkpoints as checkpoint_files
from deeplab2_kmax.core.cli import UserError


class NonFiniteLossError(RuntimeError):
  """A loss became NaN/Inf; the run stops without saving over the last good checkpoint."""


class TrainingInterrupted(Exception):
  """SIGTERM/SIGINT arrived; a checkpoint was saved. `signum` is the signal number."""

  def __init__(self, signum: int, checkpoint: Optional[str]):
    super().__init__(f"stopped by {signal.Signals(signum).name} at checkpoint {checkpoint}")
    self.signum = signum
    self.checkpoint = checkpoint


def rng_states(model) -> list:
  """The state variables of the model's random generators (keras SeedGenerators, e.g.
  dropout), which `tf.train.Checkpoint(model=model)` does not see."""
  return [getattr(v, "value", v) for v in model.variables
          if v.path.endswith("seed_generator_state")]


class CheckpointState:
  """Owns the tf.train.Checkpoint and its manager for one model_dir."""

  def __init__(self, model_dir: str, model, optimizer, step: tf.Variable,
               iterator=None, max_to_keep: int = 3, overwrite: bool = False):
    self.items = {"model": model, "optimizer": optimizer, "step": step}
    if iterator is not None:
      self.items["iterator"] = iterator
    rng = rng_states(model)
    if rng:
      self.items["rng"] = tf.train.Checkpoint(**{f"s{i}": v for i, v in enumerate(rng)})
    self.step = step
    self.model_dir = model_dir
    self.max_to_keep = max_to_keep
    self.overwrite = overwrite
    self.checkpoint = tf.train.Checkpoint(**self.items)
    self._manager = None

  @property
  def manager(self) -> tf.train.CheckpointManager:
    if self._manager is None:  # after restore_latest has made the state file agree
      self._manager = tf.train.CheckpointManager(
          self.checkpoint, directory=self.model_dir, max_to_keep=self.max_to_keep,
          checkpoint_name="ckpt")
    return self._manager

  @property
  def latest(self) -> Optional[str]:
    return self.manager.latest_checkpoint

  def _restore(self, prefix: str) -> None:
    names = {name for name, _ in tf.train.list_variables(prefix)}
    checkpoint = self.checkpoint  # its save_counter is restored too
    if "rng" in self.items and not any(n.startswith("rng/") for n in names):
      logging.warning("%s has no random-generator state (written by an older version): "
                      "the resumed run will not be bit-identical", prefix)
      checkpoint = tf.train.Checkpoint(**{k: v for k, v in self.items.items()
                                          if k != "rng"})
    checkpoint_files.restore(checkpoint, prefix)

  def restore_latest(self) -> Optional[str]:
    """Restores the newest readable checkpoint of model_dir; returns its prefix (None
    when starting from scratch). See the module docstring."""
    found = checkpoint_files.numbered(self.model_dir)
    unreadable = []
    for _, prefix in found:
      try:
        checkpoint_files.check_readable(prefix)
        self._restore(prefix)
      except checkpoint_files.CheckpointUnreadableError as e:
        unreadable.append((prefix, str(e)))
        continue
      self._set_aside(unreadable, f"resuming from {prefix}")
      self._write_state_file(prefix, [p for _, p in found if p not in dict(unreadable)])
      logging.info("restored %s (step %d)", prefix, int(self.step.numpy()))
      return prefix
    damaged = [u for u in unreadable if not tf.io.gfile.isdir(u[0] + "_temp")]
    if damaged and not self.overwrite:  # (a save cut short leaves `<prefix>_temp/`)
      raise UserError(
          f"--model_dir={self.model_dir}: none of its {len(found)} checkpoints can be "
          f"restored (newest: {damaged[0][1]}); pass --overwrite to train from scratch "
          "there (their files are kept, renamed *.unreadable)")
    self._set_aside(unreadable, "training from scratch")
    state_file = os.path.join(self.model_dir, "checkpoint")
    if tf.io.gfile.exists(state_file):  # names no existing checkpoint
      tf.io.gfile.rename(state_file, state_file + ".stale", overwrite=True)
    logging.info("no checkpoint in %s: starting from scratch", self.model_dir)
    return None

  @staticmethod
  def _set_aside(unreadable, action: str) -> None:
    for prefix, error in unreadable:
      for path in tf.io.gfile.glob(prefix + ".*") + tf.io.gfile.glob(prefix + "_temp"):
        if not path.endswith(".unreadable"):
          tf.io.gfile.rename(path, path + ".unreadable", overwrite=True)
      logging.warning("%s; its files are renamed *.unreadable, %s", error, action)

  def _write_state_file(self, latest: str, prefixes) -> None:
    """The `checkpoint` state file from the files (it may be missing or garbled)."""
    number = lambda p: int(p.rsplit("-", 1)[1])
    older = sorted((p for p in prefixes if number(p) <= number(latest)), key=number)
    tf.compat.v1.train.update_checkpoint_state(  # relative names, as the manager writes
        self.model_dir, os.path.basename(latest),
        all_model_checkpoint_paths=[os.path.basename(p) for p in older])
    self._manager = None

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
