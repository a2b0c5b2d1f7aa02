"""Which checkpoints a model_dir holds, whether they read, and restoring with clear errors.

* The `ckpt-<n>` files decide (`numbered`), not the `checkpoint` state file: a deleted
  or garbled state file loses nothing.
* `check_readable(prefix)` reads every tensor of a checkpoint (TensorFlow verifies each
  one's CRC32C) and raises `CheckpointUnreadableError` naming it: truncated, garbled or
  missing files.
* `restore(checkpoint, prefix)` restores and turns a structure or shape mismatch (a
  checkpoint of another config or class count) into one `CheckpointMismatchError` line,
  without TensorFlow's warning per unrestored value.
* `newest_readable(model_dir)`: the newest checkpoint that reads, with a warning naming
  each newer one that does not.
* `resolve_checkpoint` / `restore_model`: the one way the CLIs and the evaluation find
  and restore a model's checkpoint (a prefix or a model_dir); `restore_resolved` when
  the prefix was resolved first (to compare its dataset_info before building the model).
Used by the trainer (resume), evaluation and the inference CLIs.
"""
import logging
import os
import re
from typing import Callable, List, Optional, Tuple

import tensorflow as tf

from deeplab2_kmax.core.cli import UserError

_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


class CheckpointUnreadableError(UserError):
  """A checkpoint's files are missing, truncated or corrupt (the message names it)."""


class CheckpointMismatchError(UserError):
  """A checkpoint does not fit the model built from the config and dataset_info."""


def numbered(model_dir: str) -> List[Tuple[int, str]]:
  """[(n, prefix)] of the `ckpt-<n>.index` files in model_dir, newest (largest n) first."""
  if not tf.io.gfile.isdir(model_dir):
    return []
  found = [(int(m.group(1)), os.path.join(model_dir, f"ckpt-{m.group(1)}"))
           for m in map(_INDEX.match, tf.io.gfile.listdir(model_dir)) if m]
  return sorted(found, reverse=True)


def _unreadable(e: Exception) -> str:
  """`unreadable checkpoint (<error type>: <first line of its message>)`."""
  text = (getattr(e, "message", None) or str(e) or type(e).__name__).strip()
  return f"unreadable checkpoint ({type(e).__name__}: {text.splitlines()[0][:200]})"


def check_readable(prefix: str) -> None:
  """Reads every tensor of the checkpoint (CRC-checked); raises CheckpointUnreadableError.
  Variant tensors (an input iterator's state) are checked when they are restored."""
  try:
    reader = tf.train.load_checkpoint(prefix)
    for name, dtype in reader.get_variable_to_dtype_map().items():
      if dtype != tf.variant:
        reader.get_tensor(name)
  except Exception as e:  # pylint: disable=broad-except  (DataLoss, IndexError, ...)
    raise CheckpointUnreadableError(f"{prefix}: {_unreadable(e)}") from None


class _NoUnrestoredValueWarnings(logging.Filter):
  """Drops TensorFlow's warning per unrestored value that a failed restore leaves for
  garbage collection / interpreter exit (hundreds of lines after the one-line error)."""

  def filter(self, record):
    message = record.getMessage()
    return not (message.startswith("Value in checkpoint could not be found")
                or "being deleted with unrestored values" in message)


_QUIET = _NoUnrestoredValueWarnings()


def restore(checkpoint: tf.train.Checkpoint, prefix: str, partial: bool = False):
  """Restores `prefix` into `checkpoint`, every object of `checkpoint` matched (with
  `partial`, values of the file may stay unused: inference reads only the model). A
  mismatch raises CheckpointMismatchError naming the first variable at fault; any other
  failure CheckpointUnreadableError. After a failure, TensorFlow's warnings about the
  values it left unrestored are dropped (the error said what went wrong)."""
  problem, error_type = None, CheckpointMismatchError
  try:
    # read: no save_counter needed (inference); restore: it is restored too (training)
    status = checkpoint.read(prefix) if partial else checkpoint.restore(prefix)
    status.assert_existing_objects_matched()
    if partial:
      status.expect_partial()
    return status
  except (ValueError, AssertionError) as e:
    problem = str(e).strip().splitlines()[0][:400]
  except Exception as e:  # pylint: disable=broad-except
    problem = _unreadable(e)
    error_type = CheckpointUnreadableError
  tf.get_logger().addFilter(_QUIET)  # idempotent
  if error_type is CheckpointMismatchError:
    problem = (f"does not match the model built from the gin config and dataset_info "
               f"({problem}); was it trained with another config or dataset?")
  raise error_type(f"{prefix}: {problem}")


def newest_readable(model_dir: str,
                    warn: Callable[[str], None] = logging.warning) -> Optional[str]:
  """The newest `ckpt-<n>` of model_dir that reads; `warn` names each newer one that
  does not. None when there is no checkpoint; CheckpointUnreadableError when none reads."""
  found = numbered(model_dir)
  errors = []
  for _, prefix in found:
    try:
      check_readable(prefix)
    except CheckpointUnreadableError as e:
      errors.append(str(e))
      continue
    for error in errors:
      warn(f"{error}; using the newest readable checkpoint {prefix} instead")
    return prefix
  if errors:
    raise CheckpointUnreadableError(f"{model_dir}: none of its {len(found)} checkpoints "
                                    f"reads (newest: {errors[0]})")
  return None


def resolve_checkpoint(checkpoint: str) -> str:
  """A checkpoint prefix (`model_dir/ckpt-300`) or a model_dir (its newest readable
  checkpoint: the `ckpt-<n>` files decide, `newest_readable`)."""
  if not checkpoint:
    raise UserError("--checkpoint: required (a prefix such as model_dir/ckpt-300)")
  if tf.io.gfile.isdir(checkpoint):
    latest = newest_readable(checkpoint)
    if latest is None:
      raise UserError(f"--checkpoint={checkpoint}: directory holds no checkpoint")
    return latest
  if not tf.io.gfile.exists(checkpoint + ".index"):
    raise UserError(f"--checkpoint={checkpoint}: no such checkpoint ({checkpoint}.index "
                    "is missing); pass a prefix such as model_dir/ckpt-300")
  check_readable(checkpoint)
  return checkpoint


def untracked_variables(model):
  """Paths of model variables that `tf.train.Checkpoint(model=model)` cannot see (and so
  never saves nor restores), e.g. those of layers kept in plain Python lists under
  Keras 3. Random-number generator states are ignored (inference draws none)."""
  checkpoint = tf.train.Checkpoint(model=model)
  tracked = {id(obj) for obj in tf.train.TrackableView(checkpoint).descendants()}
  return [v.path for v in model.variables
          if id(v) not in tracked and not v.path.endswith("seed_generator_state")]


def restore_model(model, checkpoint: str, dummy_size: int = 65):
  """Builds the model's variables on a dummy image, then restores `checkpoint` (a
  prefix or a model_dir, see `resolve_checkpoint`) and checks that every model variable
  received a value (a mismatch is one clear error). Returns the prefix."""
  return restore_resolved(model, resolve_checkpoint(checkpoint), dummy_size)


def restore_resolved(model, prefix: str, dummy_size: int = 65):
  """`restore_model` for a prefix that `resolve_checkpoint` returned (its tensors were
  read once already; they are not checked again)."""
  model(tf.zeros([1, dummy_size, dummy_size, 3]), training=False)
  missing = untracked_variables(model)
  if missing:
    raise ValueError(
        f"--checkpoint={prefix}: {len(missing)} of {len(model.variables)} model variables "
        f"are invisible to tf.train.Checkpoint(model=model), so no checkpoint holds them "
        f"(first: {missing[:3]}); under Keras 3, layers kept in Python lists are not "
        "tracked by TF checkpoints: the model code must assign them as attributes")
  restore(tf.train.Checkpoint(model=model), prefix, partial=True)
  return prefix
