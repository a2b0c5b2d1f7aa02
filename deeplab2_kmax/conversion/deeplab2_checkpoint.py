"""Opening a deeplab2 checkpoint: a prefix, a folder holding one, or the .tar.gz as is.

deeplab2 distributes its checkpoints as `.tar.gz` archives of a TF2 object checkpoint
(`ckpt-N.index` + `ckpt-N.data-*`). `open_checkpoint` accepts all three forms, extracts
an archive into a temporary folder (regular files only, each kept inside that folder),
and returns a `Deeplab2Checkpoint` listing the model variables and the keys deliberately
skipped (optimizer slots, step counters, the object graph). Unreadable input is one
`CheckpointError` naming the file and what is wrong with it.
"""

import os
import re
import shutil
import tarfile
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# Keys that are not model weights, with the reason they are skipped.
SKIPPED_PATTERNS = (
    (r"(^|/)\.OPTIMIZER_SLOT/", "optimizer slot"),
    (r"^(backbone_)?optimizer/", "optimizer state"),
    (r"^(global_step|save_counter|step)/", "step counter"),
    (r"^_CHECKPOINTABLE_OBJECT_GRAPH$", "object graph"),
)


class CheckpointError(ValueError):
  """A checkpoint that cannot be converted; the message is one line for the user."""


def skip_reason(key: str) -> Optional[str]:
  for pattern, reason in SKIPPED_PATTERNS:
    if re.search(pattern, key):
      return reason
  return None


class Deeplab2Checkpoint:
  """Variables of one checkpoint: `shapes` {key: shape} of the model variables,
  `skipped` {key: reason}, `read(key)` -> float32 array, `global_step` (or None)."""

  def __init__(self, prefix: str, source: str, tmpdir: Optional[str] = None):
    self.prefix = prefix
    self.source = source
    self._tmpdir = tmpdir
    try:
      self._reader = tf.train.load_checkpoint(prefix)
      shapes = self._reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as e:
      raise CheckpointError(f"{source}: not a readable TensorFlow checkpoint "
                            f"({_first_line(e)})") from e
    self.shapes: Dict[str, Tuple[int, ...]] = {}
    self.skipped: Dict[str, str] = {}
    for key, shape in sorted(shapes.items()):
      reason = skip_reason(key)
      if reason is not None:
        self.skipped[key] = reason
      elif key.endswith(SUFFIX):
        self.shapes[key] = tuple(int(s) for s in shape)
      else:
        self.skipped[key] = "not a variable"
    if not self.shapes:
      raise CheckpointError(f"{source}: holds no model variables "
                            f"(keys: {', '.join(list(shapes)[:4]) or 'none'})")

  def read(self, key: str) -> np.ndarray:
    try:
      return np.asarray(self._reader.get_tensor(key), np.float32)
    except (tf.errors.OpError, ValueError, IndexError) as e:
      raise CheckpointError(f"{self.source}: variable {key} cannot be read; the "
                            f"checkpoint is truncated or corrupt ({_first_line(e)})") from e

  def read_all(self) -> Dict[str, np.ndarray]:
    """Every model variable (also proves the data files are complete)."""
    return {key: self.read(key) for key in self.shapes}

  @property
  def global_step(self) -> Optional[int]:
    for key in ("global_step" + SUFFIX, "step" + SUFFIX):
      if key in self.skipped:
        try:
          return int(self._reader.get_tensor(key))
        except (tf.errors.OpError, ValueError, TypeError):
          return None
    return None

  def close(self):
    if self._tmpdir:
      shutil.rmtree(self._tmpdir, ignore_errors=True)
      self._tmpdir = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return text[0][:300] if text else type(error).__name__


def prefix_in_folder(folder: str, source: str) -> str:
  """The checkpoint prefix in `folder`: the state file's latest, else the newest
  `*.index` (here or one level down)."""
  latest = tf.train.latest_checkpoint(folder)
  if latest and tf.io.gfile.exists(latest + ".index"):
    return latest
  indexes = sorted(tf.io.gfile.glob(os.path.join(folder, "**", "*.index")) +
                   tf.io.gfile.glob(os.path.join(folder, "*.index")))
  if not indexes:
    raise CheckpointError(f"{source}: no checkpoint (*.index file) in this folder")
  # The newest step if several: ckpt-150000 over ckpt-10000.
  def step(path):
    m = re.search(r"-(\d+)\.index$", path)
    return int(m.group(1)) if m else -1
  return max(sorted(set(indexes)), key=step)[:-len(".index")]


def _extract(archive: str, into: str) -> None:
  """Extracts the regular files of a tar archive, each inside `into`."""
  root = os.path.realpath(into)
  try:
    with tarfile.open(archive, "r:*") as tar:
      for member in tar.getmembers():
        if not member.isfile():
          continue
        target = os.path.realpath(os.path.join(root, member.name))
        if os.path.commonpath([root, target]) != root:
          raise CheckpointError(f"{archive}: member {member.name!r} would be written "
                                "outside the extraction folder; refusing the archive")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        source = tar.extractfile(member)
        with open(target, "wb") as f:
          shutil.copyfileobj(source, f)
  except (tarfile.TarError, EOFError, OSError) as e:
    raise CheckpointError(f"{archive}: cannot extract ({_first_line(e)}); the download "
                          "may be incomplete") from e


def open_checkpoint(path: str) -> Deeplab2Checkpoint:
  """A deeplab2 checkpoint from a prefix (`.../ckpt-150000`), a folder or a .tar.gz."""
  if not path:
    raise CheckpointError("--deeplab2_checkpoint: required (a checkpoint prefix, a "
                          "folder holding one, or the downloaded .tar.gz)")
  if os.path.isfile(path) and tarfile.is_tarfile(path):
    tmpdir = tempfile.mkdtemp(prefix="deeplab2_ckpt_")
    try:
      _extract(path, tmpdir)
      return Deeplab2Checkpoint(prefix_in_folder(tmpdir, path), path, tmpdir)
    except BaseException:
      shutil.rmtree(tmpdir, ignore_errors=True)
      raise
  if os.path.isdir(path):
    return Deeplab2Checkpoint(prefix_in_folder(path, path), path)
  if path.endswith(".index"):
    path = path[:-len(".index")]
  if not tf.io.gfile.exists(path + ".index"):
    raise CheckpointError(f"{path}: no such checkpoint (neither a .tar.gz, a folder, nor "
                          f"a prefix with {os.path.basename(path)}.index beside it)")
  return Deeplab2Checkpoint(path, path)


def describe_encoder(shapes: Dict[str, Tuple[int, ...]]) -> Optional[str]:
  """What encoder a checkpoint holds, from its keys ("ResNet-50", "ConvNeXt-L", ...)."""
  keys = list(shapes)

  def has(fragment):
    return any(fragment in k for k in keys)

  if has("_stem/_conv1_bn_act/"):
    return "MaX-S (axial-ResNet-50)" if has("_attention/_height_axis") else (
        "ResNet-50 (inception stem)")
  if has("_stem/_conv/kernel") or has("_stem/_batch_norm/"):
    return "ResNet-50"
  stem = [s for k, s in shapes.items()
          if re.search(r"downsample_layers/0/layer_with_weights-0/kernel", k)]
  if stem:
    dim = stem[0][-1]
    deep = has("stages/2/layer_with_weights-26/")
    name = {96: "T" if not deep else "S", 128: "B", 192: "L"}.get(dim, f"dim {dim}")
    return f"ConvNeXt-{name}"
  return None


def model_parts(shapes: Dict[str, Tuple[int, ...]]) -> List[str]:
  """Which parts of a kMaX-DeepLab a checkpoint holds (encoder only, or the model)."""
  parts = []
  for part, prefixes in (("encoder", ("encoder/", "backbone/_encoder/",
                                      "downsample_layers/", "stages/")),
                         ("pixel_decoder", ("pixel_decoder/",)),
                         ("transformer_decoder", ("transformer_decoder/",)),
                         ("heads", ("transformer_class_head/", "pixel_space_head/"))):
    if any(k.startswith(prefixes) for k in shapes):
      parts.append(part)
  return parts
