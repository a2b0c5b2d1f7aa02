"""TensorBoard summaries: scalars (loss terms, learning rate, speed, metrics) and
panoptic predictions drawn as images.

Only the chief writes (other workers get a writer that does nothing). Train summaries
go to `<model_dir>/train`, eval summaries to `<model_dir>/eval`.
"""

import json
import os
from typing import Mapping

import numpy as np
import tensorflow as tf


class Writer:
  """A tf.summary writer for one log directory (a no-op when `enabled` is False)."""

  def __init__(self, logdir: str, enabled: bool = True):
    self.logdir = logdir
    self._writer = tf.summary.create_file_writer(logdir) if enabled else None

  def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
    if self._writer is None:
      return
    with self._writer.as_default():
      for name, value in values.items():
        tf.summary.scalar(prefix + name, float(value), step=step)
    self._writer.flush()

  def images(self, name: str, images: np.ndarray, step: int, max_outputs: int = 4) -> None:
    """images: uint8 [B, H, W, 3]."""
    if self._writer is None:
      return
    with self._writer.as_default():
      tf.summary.image(name, np.asarray(images, np.uint8), step=step,
                       max_outputs=max_outputs)
    self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()


def drop_history_after(path: str, step: int) -> None:
  """Removes the lines of a history.jsonl logged after `step` (a resumed run logs those
  steps again), atomically; unparsable lines (a write cut by a kill) go too."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.read().splitlines()
  kept = []
  for line in lines:
    try:
      if int(json.loads(line)["step"]) <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      continue
  if len(kept) != len(lines):
    with open(path + ".tmp", "w") as f:
      f.write("".join(line + "\n" for line in kept))
    os.replace(path + ".tmp", path)


def train_and_eval_writers(model_dir: str, enabled: bool = True):
  return (Writer(os.path.join(model_dir, "train"), enabled),
          Writer(os.path.join(model_dir, "eval"), enabled))
