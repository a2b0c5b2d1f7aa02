"""Starting a model from a checkpoint that need not match it exactly (fine-tuning).

`initialize(model, path, space)` fills the built `model` from `path`, which may be

* a deeplab2 kMaX-DeepLab checkpoint (prefix, folder or .tar.gz; see `convert`): a
  full model, or an ImageNet backbone (ResNet-50 / MaX-S variables under `encoder/` or
  `backbone/_encoder/`, ConvNeXt variables as deeplab2's Keras `load_weights` reads
  them);
* a checkpoint of this project (`tf.train.Checkpoint(model=...)`, e.g. a trainer
  checkpoint or a converted one).

Whatever fits is restored; the rest of the model keeps its fresh initialization. When
the class counts differ (a COCO model fine-tuned on a 6-class dataset) the
class-dependent heads (every class head and the semantic classifier) are re-initialized,
and the report says so. A checkpoint of another encoder is refused. The returned
`Report` counts restored / newly initialized / skipped variables and prints as a short
table for the training log.
"""

import dataclasses
from typing import Dict, List, Optional

import tensorflow as tf

from deeplab2_kmax.conversion import convert
from deeplab2_kmax.conversion import deeplab2_checkpoint
from deeplab2_kmax.conversion import label_space as label_space_lib

OUR_CLASS_HEAD = "model/prediction_head/class_head/bias/.ATTRIBUTES/VARIABLE_VALUE"


@dataclasses.dataclass
class Report:
  """What `initialize` did."""
  source: str
  kind: str                       # "deeplab2" or "deeplab2-kmax"
  restored: List[str]             # our variable paths that received a value
  new: List[str]                  # our variable paths left freshly initialized
  skipped: Dict[str, int]         # checkpoint entries not used, by reason
  class_heads_reset: bool = False
  note: str = ""

  def table(self) -> str:
    rows = [("restored", len(self.restored)), ("newly initialized", len(self.new))]
    rows += [(f"skipped: {reason}", n) for reason, n in sorted(self.skipped.items())]
    width = max(len(name) for name, _ in rows)
    lines = [f"init checkpoint {self.source} ({self.kind} checkpoint)"]
    lines += [f"  {name:<{width}}  {n:>6}" for name, n in rows]
    if self.class_heads_reset:
      lines.append("  class-dependent heads re-initialized: " + self.note)
    elif self.new:
      lines.append(f"  newly initialized parts: {_parts(self.new)}")
    return "\n".join(lines)


def _parts(paths: List[str]) -> str:
  tops = sorted({"/".join(p.split("/")[:2]) for p in paths})
  return ", ".join(tops[:6]) + (f" (+{len(tops) - 6} more)" if len(tops) > 6 else "")


def initialize(model, path: str,
               space: Optional[label_space_lib.LabelSpace]) -> Report:
  """Restores what fits of `path` into the built `model` (see the module docstring)."""
  ours = _our_checkpoint_prefix(path)
  if ours is not None:
    return _from_ours(model, ours, path)
  with deeplab2_checkpoint.open_checkpoint(path) as checkpoint:
    plan = convert.plan_conversion(model, checkpoint, space)
    values = {a.key: checkpoint.read(a.key) for a in plan.assignments}
    plan.apply(values)
    skipped = {}
    for reason in checkpoint.skipped.values():
      skipped[reason] = skipped.get(reason, 0) + 1
    if plan.unmapped:
      skipped["not in this model"] = len(set(plan.unmapped))
    if plan.mismatched:
      skipped["shape differs"] = len(plan.mismatched)
    restored = plan.restored_paths
    reset = bool(plan.class_dependent)
    note = ""
    if reset:
      held = [s for k, s in checkpoint.shapes.items()
              if k.startswith("transformer_class_head/_conv/bias")]
      theirs = f"{held[0][0] - 1} classes" if held else "another class count"
      note = f"the checkpoint has {theirs}, the model {model.num_classes}"
    new = set(plan.uncovered) | set(plan.class_dependent)
    new |= {path for _, _, path, _ in plan.mismatched}
    return Report(path, "deeplab2", restored, sorted(new), skipped, reset, note)


def _our_checkpoint_prefix(path: str) -> Optional[str]:
  """The prefix of `path` if it is a checkpoint of this project (keys under model/)."""
  prefix = path
  if tf.io.gfile.isdir(path):
    try:
      prefix = deeplab2_checkpoint.prefix_in_folder(path, path)
    except deeplab2_checkpoint.CheckpointError:
      return None
  elif path.endswith(".index"):
    prefix = path[:-len(".index")]
  if not prefix or not tf.io.gfile.exists(prefix + ".index"):
    return None
  try:
    keys = [k for k, _ in tf.train.list_variables(prefix)]
  except (tf.errors.OpError, ValueError):
    return None
  return prefix if any(k.startswith("model/") for k in keys) else None


def _from_ours(model, prefix: str, source: str) -> Report:
  """Restores a checkpoint of this project, re-initializing class heads of another
  class count: the checkpoint is read into a twin of `model` built for its class
  count, and every variable whose shape matches is copied."""
  reader = tf.train.load_checkpoint(prefix)
  shapes = reader.get_variable_to_shape_map()
  their_classes = (shapes[OUR_CLASS_HEAD][0] - 1 if OUR_CLASS_HEAD in shapes
                   else model.num_classes)
  twin = model
  if their_classes != model.num_classes:
    twin = type(model).from_config(dict(model.get_config(), num_classes=their_classes))
    convert.build_variables(twin)
  status = tf.train.Checkpoint(model=twin).read(prefix)
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise deeplab2_checkpoint.CheckpointError(
        f"{source}: does not fit the model built from the config: "
        f"{str(e).splitlines()[0][:300]}") from e
  status.expect_partial()
  restored, new = [], []
  if twin is model:
    restored = sorted(convert.our_variables(model))
  else:
    theirs = convert.our_variables(twin)
    for path, variable in convert.our_variables(model).items():
      source_variable = theirs.get(path)
      if source_variable is not None and tuple(source_variable.shape) == tuple(
          variable.shape):
        variable.assign(source_variable)
        restored.append(path)
      else:
        new.append(path)
  skipped = {}
  for key in shapes:
    if not key.startswith("model/") and key != "_CHECKPOINTABLE_OBJECT_GRAPH":
      reason = deeplab2_checkpoint.skip_reason(key) or "training state"
      skipped[reason] = skipped.get(reason, 0) + 1
  note = (f"the checkpoint has {their_classes} classes, the model {model.num_classes}"
          if new else "")
  return Report(source, "deeplab2-kmax", restored, sorted(new), skipped, bool(new), note)

