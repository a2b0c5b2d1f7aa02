"""Model size and compute: parameters and multiply-accumulates of one inference forward.

    python -m deeplab2_kmax.tools.model_stats --gin_file=configs/coco/kmax_r50.gin \
        --height=800 --width=1200 [--breakdown | --per_part]
    python -m deeplab2_kmax.tools.model_stats --all   # Markdown table vs the paper

One JSON line per config: {"gin_file", "params", "params_total", "gmacs", ...}.
* params: trainable parameters of the inference graph, i.e. all trainable weights except
  those of `model.semantic_branch` (training only; the paper excludes it).
* params_total: all trainable weights, semantic branch included.
* gmacs: multiply-accumulates / 1e9 of `model(x, training=False)` for one H×W image,
  counted on the traced graph of a concrete tf.function exactly like deeplab2's number
  (docs/PAPER.md §5: TF-profiler float ops / 2): the profiler's float ops plus 2 × the MACs of
  the ops it has no statistics for (Einsum: product of all index sizes of a
  two-operand einsum), halved. Conv2D, DepthwiseConv2dNative, MatMul and BatchMatMul
  are counted by the profiler (2 flops per MAC), element-wise ops at 1 flop each.
* --breakdown (alias --per_part) adds per-part counts ("parts": {sub-layer name:
  {params, gmacs}}) keyed by the model's direct sub-layers (encoder, pixel decoder,
  transformer decoder, heads).

The model is built with `build_model(num_classes=...)` after parsing the gin file;
num_classes comes from --num_classes, else from a gin binding of build_model.num_classes,
else 133 (COCO). Variables are created by one eager training-mode call on a small
image; the full-size inference graph is only traced, never run.
"""

import json
import os
import re
from typing import Dict, List, Optional, Sequence

from absl import flags
import gin
import keras
import numpy as np

from deeplab2_kmax.app import configs
from deeplab2_kmax.core import cli
from deeplab2_kmax import model as model_lib

# Paper numbers (docs/PAPER.md §5, the paper's Tables 1–3): params in M, GMACs at 1200×800.
PAPER_TARGETS = {
    "configs/coco/kmax_r50.gin": (57, 168),
    "configs/coco/kmax_maxs.gin": (74, 240),
    "configs/coco/kmax_convnext_tiny.gin": (None, None),
    "configs/coco/kmax_convnext_small.gin": (None, None),
    "configs/coco/kmax_convnext_base.gin": (122, 380),
    "configs/coco/kmax_convnext_large.gin": (232, 744),
    "configs/coco/kmax_convnext_large_q256.gin": (232, 749),
    "configs/coco/ablations/r50_cross_attention.gin": (56, 165),
    "configs/coco/ablations/r50_dual_path_cross_attention.gin": (58, 175),
    "configs/coco/ablations/r50_kmeans_cross_attention.gin": (57, 168),
    "configs/coco/ablations/r50_dual_path_kmeans_cross_attention.gin": (59, 176),
    "configs/coco/ablations/r50_decoders_111.gin": (52, 159),
    "configs/coco/ablations/r50_decoders_222.gin": (57, 168),
    "configs/coco/ablations/r50_decoders_333.gin": (63, 176),
    "configs/coco/ablations/maxs_cross_attention.gin": (73, 237),
    "configs/coco/ablations/maxs_dual_path_cross_attention.gin": (75, 247),
    "configs/coco/ablations/maxs_kmeans_cross_attention.gin": (74, 240),
    "configs/coco/ablations/maxs_dual_path_kmeans_cross_attention.gin": (76, 248),
    "configs/coco/ablations/maxs_decoders_111.gin": (68, 231),
    "configs/coco/ablations/maxs_decoders_222.gin": (74, 240),
    "configs/coco/ablations/maxs_decoders_333.gin": (80, 248),
    "configs/cityscapes/kmax_r50.gin": (None, None),
    "configs/cityscapes/kmax_convnext_large.gin": (None, None),
    "configs/cityscapes/kmax_maxs.gin": (None, None),
    "configs/cityscapes/kmax_convnext_tiny.gin": (None, None),
    "configs/cityscapes/kmax_convnext_small.gin": (None, None),
    "configs/cityscapes/kmax_convnext_base.gin": (None, None),
    "configs/ade20k/kmax_r50.gin": (None, None),
    "configs/ade20k/kmax_r50_res1281.gin": (None, None),
    "configs/ade20k/kmax_convnext_large.gin": (None, None),
    "configs/ade20k/kmax_convnext_large_res1281.gin": (None, None),
}

FLAGS = flags.FLAGS
REPO_ROOT = configs.REPO_ROOT


def define_flags():
  """CLI flags (defined only when run as a program, so other CLIs can import us)."""
  flags.DEFINE_multi_string("gin_file", [], "Gin config file(s).")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
  flags.DEFINE_integer("height", 800, "Input height.")
  flags.DEFINE_integer("width", 1200, "Input width.")
  flags.DEFINE_integer("num_classes", None, "Classes (default: gin binding, else 133).")
  flags.DEFINE_bool("breakdown", False, "Add per-part params and GMACs.")
  flags.DEFINE_bool("per_part", False, "Alias of --breakdown.")
  flags.DEFINE_bool("all", False, "Run every config of PAPER_TARGETS; print a table.")
  flags.DEFINE_string("root", REPO_ROOT, "Repository root (config paths and gin "
                      "`include`s are relative to it).")


def _silence_tf():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel("ERROR")
  return tf


def _size(shape) -> int:
  return int(np.prod([int(d) for d in shape])) if shape else 1


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> int:
  """Multiplies of a two-operand einsum: the product of every index's size.

  Handles '...' by expanding it to fresh labels from the operand ranks. Returns 0 for
  one-operand einsums (transposes / reductions) and raises on unknown dimensions.
  """
  equation = equation.replace(" ", "")
  inputs = equation.split("->")[0].split(",")
  if len(inputs) != 2:
    return 0
  sizes: Dict[str, int] = {}
  for spec, shape in zip(inputs, shapes):
    if "..." in spec:
      n_ellipsis = len(shape) - (len(spec) - 3)
      spec = spec.replace("...", "".join(chr(0x100 + i) for i in range(n_ellipsis)))
    if len(spec) != len(shape):
      raise ValueError(f"einsum {equation}: operand {spec} vs shape {shape}")
    for label, dim in zip(spec, shape):
      if dim is None:
        raise ValueError(f"einsum {equation}: unknown dimension in {shape}")
      sizes[label] = max(sizes.get(label, 1), int(dim))
  return _size(list(sizes.values()))


def _part_of(op_name: str, parts: Sequence[str]) -> str:
  for component in op_name.split("/"):
    if component in parts:
      return component
    base = re.sub(r"_\d+$", "", component)
    if base in parts:
      return base
  return "other"


def graph_macs(graph, parts: Sequence[str] = ()) -> Dict[str, float]:
  """MACs of a traced graph: {"total": ..., "<part>": ..., "einsum_added": ...}."""
  tf = _silence_tf()
  from tensorflow.python.profiler import model_analyzer  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import option_builder  # pylint: disable=g-import-not-at-top
  options = option_builder.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  flops: Dict[str, float] = {}
  profile = model_analyzer.profile(graph, options=options)

  def walk(node):
    for child in node.children:
      if child.float_ops:
        flops[child.name] = flops.get(child.name, 0) + child.float_ops
      walk(child)
  walk(profile)
  del tf
  einsum_flops = 0
  for op in graph.get_operations():
    if op.type == "Einsum" and op.name not in flops:
      shapes = [tuple(t.shape.as_list()) for t in op.inputs]
      macs = einsum_macs(op.get_attr("equation").decode(), shapes)
      flops[op.name] = 2 * macs
      einsum_flops += 2 * macs
  result = {"total": sum(flops.values()) / 2, "einsum_added": einsum_flops / 2}
  for name, value in flops.items():
    part = _part_of(name, parts)
    result[part] = result.get(part, 0) + value / 2
  return result


def _count(weights) -> int:
  return sum(_size(w.shape) for w in weights)


def model_stats(height: int, width: int, num_classes: Optional[int] = None,
                breakdown: bool = False) -> Dict:
  """Builds the gin-configured model and returns its parameter and MAC counts."""
  tf = _silence_tf()
  if num_classes is None:
    try:
      num_classes = gin.query_parameter("build_model.num_classes")
    except ValueError:
      num_classes = 133
  keras.backend.clear_session()
  model = model_lib.build_model(num_classes=num_classes)
  # Build every weight (the semantic branch runs only in training) on a small image.
  model(np.zeros((1, 65, 65, 3), "float32"), training=True)
  semantic = getattr(model, "semantic_branch", None)
  semantic_ids = ({id(w) for w in semantic.trainable_weights}
                  if semantic is not None else set())
  inference_weights = [w for w in model.trainable_weights if id(w) not in semantic_ids]

  forward = tf.function(lambda x: model(x, training=False), autograph=False)
  concrete = forward.get_concrete_function(
      tf.TensorSpec((1, height, width, 3), tf.float32))
  sublayers = [layer for layer in model._flatten_layers(include_self=False,  # pylint: disable=protected-access
                                                        recursive=False)]
  parts = [layer.name for layer in sublayers]
  macs = graph_macs(concrete.graph, parts)
  stats = {
      "params": _count(inference_weights),
      "params_total": _count(model.trainable_weights),
      "gmacs": round(macs["total"] / 1e9, 3),
      "einsum_gmacs_added": round(macs["einsum_added"] / 1e9, 3),
      "height": height, "width": width, "num_classes": int(num_classes),
  }
  if breakdown:
    stats["parts"] = {
        layer.name: {"params": _count(layer.trainable_weights),
                     "gmacs": round(macs.get(layer.name, 0.0) / 1e9, 3)}
        for layer in sublayers}
    if macs.get("other"):
      stats["parts"]["other"] = {"params": 0, "gmacs": round(macs["other"] / 1e9, 3)}
  return stats


def stats_for_config(gin_files: List[str], bindings: Sequence[str] = (),
                     root: str = REPO_ROOT, **kwargs):
  """Parses the gin files (includes relative to `root`) and returns model_stats."""
  if root not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(root)
  configs.parse_config(gin_files, bindings, clear=True)
  try:
    return model_stats(**kwargs)
  finally:
    gin.clear_config()


def _rel(ours: float, paper: Optional[float]) -> str:
  if paper is None:
    return "–"
  return f"{100.0 * (ours - paper) / paper:+.1f}%"


def markdown_table(rows: List[Dict]) -> str:
  """Rows of model_stats (+ "gin_file") → Markdown table beside the paper's numbers.

  The last column lists the MACs outside every direct sub-layer of the model (e.g.
  resizing done in KMaXDeepLab.call itself), when the rows have a breakdown.
  """
  lines = ["| config | params (M) | paper | Δ | GMACs | paper | Δ | outside sub-layers |",
           "|---|---|---|---|---|---|---|---|"]
  for row in rows:
    paper_params, paper_gmacs = PAPER_TARGETS.get(row["gin_file"], (None, None))
    params_m = row["params"] / 1e6
    other = row.get("parts", {}).get("other", {}).get("gmacs")
    other = "–" if other is None else f"{other:.1f}"
    lines.append(
        f"| {row['gin_file']} | {params_m:.2f} | {paper_params or '–'} | "
        f"{_rel(params_m, paper_params)} | {row['gmacs']:.1f} | {paper_gmacs or '–'} | "
        f"{_rel(row['gmacs'], paper_gmacs)} | {other} |")
  return "\n".join(lines)


def main(argv):
  del argv
  if FLAGS.all:
    rows = []
    for gin_file in PAPER_TARGETS:
      stats = stats_for_config([os.path.join(FLAGS.root, gin_file)],
                               FLAGS.gin_bindings, root=FLAGS.root, height=FLAGS.height,
                               width=FLAGS.width, num_classes=FLAGS.num_classes,
                               breakdown=FLAGS.breakdown or FLAGS.per_part)
      row = {"gin_file": gin_file, **stats}
      print(json.dumps(row), flush=True)
      rows.append(row)
    print(markdown_table(rows))
    return
  if not FLAGS.gin_file:
    raise cli.UserError("--gin_file: required (a config.gin, or pass --all)")
  for path in FLAGS.gin_file:
    if not os.path.exists(path):
      raise cli.UserError(f"--gin_file={path}: no such file")
  stats = stats_for_config(FLAGS.gin_file, FLAGS.gin_bindings, root=FLAGS.root,
                           height=FLAGS.height,
                           width=FLAGS.width, num_classes=FLAGS.num_classes,
                           breakdown=FLAGS.breakdown or FLAGS.per_part)
  print(json.dumps({"gin_file": ",".join(FLAGS.gin_file), **stats}))



def entry():
  """Console-script entry point."""
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
