"""deeplab2 checkpoint -> the variables of our `KMaXDeepLab`.

`plan_conversion(model, checkpoint, label_space)` decides, for every deeplab2 variable,
which of our variables takes it and how it is reshaped (`key_map`), and lists what does
not fit: keys with no place in our model, shape mismatches, our variables that nothing
fills, and the class-dependent heads when the class counts differ. `Plan.apply()` assigns
the values. `convert()` requires a complete plan; `train.py --init_checkpoint` applies a
partial one (see `init_checkpoint.py`).
"""

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from deeplab2_kmax.conversion import deeplab2_checkpoint
from deeplab2_kmax.conversion import key_map
from deeplab2_kmax.conversion import label_space as label_space_lib

ENCODER_NAMES = {"resnet50": "ResNet-50", "axial_resnet50": "MaX-S (axial-ResNet-50)",
                 "convnext_tiny": "ConvNeXt-T", "convnext_small": "ConvNeXt-S",
                 "convnext_base": "ConvNeXt-B", "convnext_large": "ConvNeXt-L"}


def our_variables(model) -> Dict[str, keras.Variable]:
  """{path relative to the model: variable}, random-generator states excluded."""
  out = {}
  for v in model.variables:
    if v.path.endswith("seed_generator_state"):
      continue
    out[v.path.split("/", 1)[1]] = v
  return out


def build_variables(model, size: int = 65) -> None:
  """Creates every variable, the training-only semantic branch included, without
  running anything (a symbolic training-mode call)."""
  model(keras.Input(shape=(size, size, 3), batch_size=1), training=True)


def encoder_name(model) -> str:
  name = getattr(model, "backbone_name", None) or model.backbone.name
  return ENCODER_NAMES.get(name, name)


@dataclasses.dataclass
class Assignment:
  key: str
  path: str
  variable: keras.Variable
  transform: Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class Plan:
  """The outcome of matching a checkpoint against a model."""
  checkpoint: deeplab2_checkpoint.Deeplab2Checkpoint
  assignments: List[Assignment] = dataclasses.field(default_factory=list)
  unmapped: List[str] = dataclasses.field(default_factory=list)
  mismatched: List[Tuple[str, tuple, str, tuple]] = dataclasses.field(default_factory=list)
  class_dependent: List[str] = dataclasses.field(default_factory=list)
  uncovered: List[str] = dataclasses.field(default_factory=list)

  @property
  def restored_paths(self) -> List[str]:
    return sorted({a.path for a in self.assignments})

  def problems(self) -> List[str]:
    """One short line per kind of problem (empty: the plan is complete)."""
    out = []
    if self.unmapped:
      out.append(f"{len(self.unmapped)} checkpoint variable(s) have no place in the "
                 f"model: {_some(self.unmapped)}")
    if self.mismatched:
      shown = "; ".join(f"{k} {list(s)} vs {p} {list(o)}"
                        for k, s, p, o in self.mismatched[:3])
      out.append(f"{len(self.mismatched)} shape mismatch(es) (checkpoint vs model): "
                 f"{shown}")
    if self.class_dependent:
      out.append(f"the class heads do not match the model's class count: "
                 f"{_some(self.class_dependent)}")
    if self.uncovered:
      out.append(f"{len(self.uncovered)} model variable(s) receive no value: "
                 f"{_some(self.uncovered)}")
    return out

  def apply(self, values: Optional[Dict[str, np.ndarray]] = None) -> int:
    """Assigns every planned value; returns the number of model variables set."""
    for a in self.assignments:
      value = values[a.key] if values is not None else self.checkpoint.read(a.key)
      a.variable.assign(np.asarray(a.transform(value), np.float32))
    return len(self.restored_paths)


def _some(items, limit: int = 3) -> str:
  items = list(items)
  more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
  return ", ".join(items[:limit]) + more


def _class_transform(path: str, space: Optional[label_space_lib.LabelSpace],
                     their_shape, our_shape):
  """The channel mapping of a class-dependent head, or None if it cannot map."""
  if space is None:
    return None
  if path.endswith(key_map.CLASS_HEAD_SUFFIX + "/kernel") or path.endswith(
      key_map.CLASS_HEAD_SUFFIX + "/bias"):
    if their_shape[-1] != space.num_classes + 1 or our_shape[-1] != space.num_classes + 1:
      return None
    index = space.class_permutation()
    return lambda v: key_map._squeeze_conv1d(v)[..., index]  # pylint: disable=protected-access
  if their_shape[-1] != space.semantic_channels or our_shape[-1] != space.num_classes:
    return None
  index = space.semantic_channel_index()
  return lambda v: v[..., index]


def _is_class_dependent(path: str) -> bool:
  return (f"/{key_map.CLASS_HEAD_SUFFIX}/" in f"/{path}" or
          path.startswith(key_map.SEMANTIC_HEAD_SUFFIX + "/"))


def plan_conversion(model, checkpoint: deeplab2_checkpoint.Deeplab2Checkpoint,
                    space: Optional[label_space_lib.LabelSpace]) -> Plan:
  """Matches every model variable of `checkpoint` with the built `model`.

  Raises CheckpointError when the checkpoint's encoder is not the model's.
  """
  held = deeplab2_checkpoint.describe_encoder(checkpoint.shapes)
  ours = encoder_name(model)
  if held is not None and held != ours:
    raise deeplab2_checkpoint.CheckpointError(
        f"{checkpoint.source}: this checkpoint holds a {held} encoder; the model config "
        f"builds a {ours} encoder")
  if held is None and "encoder" not in deeplab2_checkpoint.model_parts(checkpoint.shapes):
    if any(k.startswith("model/") for k in checkpoint.shapes):
      raise deeplab2_checkpoint.CheckpointError(
          f"{checkpoint.source}: a checkpoint of this project (its variables are under "
          "model/), not a deeplab2 one: pass it to --checkpoint or --init_checkpoint "
          "directly")
    raise deeplab2_checkpoint.CheckpointError(
        f"{checkpoint.source}: not a deeplab2 kMaX-DeepLab checkpoint (no encoder "
        f"variables; first keys: {_some(sorted(checkpoint.shapes))})")
  variables = our_variables(model)
  layer_names = [layer.name for layer in model.transformer_decoder.decoder_layers]
  rates = tuple(getattr(model.semantic_branch, "atrous_rates", (6, 12, 18)))
  plan = Plan(checkpoint)
  covered = set()
  for key, shape in sorted(checkpoint.shapes.items()):
    found = key_map.targets(key, shape, model.backbone.name,
                            model.pixel_decoder_block_types, layer_names, rates)
    if not found:
      plan.unmapped.append(key)
      continue
    for path, transform in found:
      variable = variables.get(path)
      if variable is None:
        plan.unmapped.append(key)
        continue
      our_shape = tuple(variable.shape)
      if _is_class_dependent(path):
        transform = _class_transform(path, space, shape, our_shape)
        if transform is None:
          plan.class_dependent.append(path)
          covered.add(path)
          continue
      result = transform(np.zeros(shape, np.float32))
      if tuple(result.shape) != our_shape:
        plan.mismatched.append((key, tuple(shape), path, our_shape))
        continue
      plan.assignments.append(Assignment(key, path, variable, transform))
      covered.add(path)
  plan.uncovered = sorted(set(variables) - covered)
  return plan


def convert_into(model, checkpoint: deeplab2_checkpoint.Deeplab2Checkpoint,
                 space: Optional[label_space_lib.LabelSpace]) -> Plan:
  """Fills every variable of the built `model` from `checkpoint`, or raises
  CheckpointError naming what does not match (nothing is assigned then)."""
  plan = plan_conversion(model, checkpoint, space)
  problems = plan.problems()
  if problems:
    raise deeplab2_checkpoint.CheckpointError(
        f"{checkpoint.source} does not match the model: " + "; ".join(problems))
  values = checkpoint.read_all()  # every value readable before anything is assigned
  plan.apply(values)
  return plan


def write_checkpoint(model, output_dir: str, step: int = 0,
                     overwrite: bool = False) -> str:
  """Saves `tf.train.Checkpoint(model=model)` as `output_dir/ckpt-<step>` (with the
  `checkpoint` state file), the layout every `--checkpoint` flag reads. Refuses a
  folder that already holds checkpoints unless `overwrite`."""
  if not overwrite and os.path.isdir(output_dir) and (
      tf.train.latest_checkpoint(output_dir) or
      tf.io.gfile.glob(os.path.join(output_dir, "ckpt-*.index"))):
    raise deeplab2_checkpoint.CheckpointError(
        f"--output_dir={output_dir}: already holds checkpoints; choose an empty folder "
        "or pass --overwrite")
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), output_dir,
                                       max_to_keep=1, checkpoint_name="ckpt")
  return manager.save(checkpoint_number=int(step))
