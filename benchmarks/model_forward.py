"""Forward-pass speed of the kMaX model on this CPU, graph mode and XLA.

    python benchmarks/model_forward.py [--gin_file=configs/coco/kmax_r50.gin]
        [--sizes=641,1281] [--repeats=10] [--modes=graph,xla] [--post_process]
        [--dtype_policy=float32|mixed_bfloat16]

Prints one JSON line per (size, mode): the median (and min) wall time of
`model(x, training=False)` for one random image (batch 1) inside a `tf.function`
(mode "graph") or `tf.function(jit_compile=True)` (mode "xla"); with --post_process the
timed function also runs the mask-wise merge (`post_processing.MaskWiseMerger`, COCO
settings unless the config binds others; mask stride = the model's output_stride) at the
input resolution. Also reported: the MACs of the forward (from
`tools/model_stats`), the achieved GFLOP/s = 2·MACs / time, and the GFLOP/s of a large
float32 matmul measured in the same run (the machine's practical peak), plus
deeplab2's own times for the same work (measured beside ours, see DEEPLAB2_SECONDS) and
our ratio to them; compare ratios only on that machine kind.
A first line {"bench": "matmul", ...} gives the matmul reference itself.
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("gin_file", "configs/coco/kmax_r50.gin", "Model config.")
flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
flags.DEFINE_list("sizes", ["641", "1281"], "Square input sizes.")
flags.DEFINE_list("modes", ["graph", "xla"], "graph and/or xla.")
flags.DEFINE_integer("repeats", 10, "Timed runs per (size, mode).")
flags.DEFINE_integer("warmup", 2, "Untimed runs after compilation.")
flags.DEFINE_bool("post_process", False, "Time forward + mask-wise merge.")
flags.DEFINE_bool("xla_post_process", False, "Also time forward + merge under XLA "
                  "(off by default: no target, and compiling the merge is slow).")
flags.DEFINE_integer("num_classes", 133, "Classes (COCO 133).")
flags.DEFINE_integer("matmul_size", 2048, "Side of the reference matmul.")
flags.DEFINE_string("dtype_policy", "float32",
                    "Keras dtype policy of the model (build_model.dtype_policy): "
                    "float32, or mixed_bfloat16 (oneDNN bf16 kernels; graph mode only).")

# deeplab2 (commit 64bc1c1, TF 2.15.1, R50 COCO config, random weights, float32, batch
# 1), run beside this project on 2026-12-06 on a 2-vCPU Xeon, quiet, medians of 7
# (graph forward; forward + its full mask-wise merge; XLA forward).
DEEPLAB2_SECONDS = {
    ("graph", False, 641): 1.338, ("graph", True, 641): 2.410,
    ("graph", False, 1281): 4.805, ("graph", True, 1281): 7.738,
    ("xla", False, 641): 3.298, ("xla", False, 1281): 14.65,
}
# Targets for ours / deeplab2 (XLA: no slower than our own graph mode).
TARGET_RATIO = {("graph", False): 0.85, ("graph", True): 0.6}
COCO_NUM_THING_CLASSES = 80  # COCO panoptic train ids 0..79 are the things


def _median_time(fn, args, repeats, warmup):
  for _ in range(warmup):
    _block(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    _block(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times), min(times)


def _block(outputs):
  """Waits for the outputs without copying them (eager CPU functions are synchronous;
  reading one element of the smallest output covers asynchronous devices too)."""
  tensors = [t for t in tf.nest.flatten(outputs) if hasattr(t, "numpy")]
  smallest = min(tensors, key=lambda t: t.shape.num_elements() or 0)
  tf.reshape(smallest, [-1])[:1].numpy()


def matmul_gflops(size: int, repeats: int, dtype=tf.float32) -> float:
  a = tf.cast(tf.random.normal((size, size)), dtype)
  b = tf.cast(tf.random.normal((size, size)), dtype)
  fn = tf.function(tf.linalg.matmul)
  median, _ = _median_time(fn, (a, b), max(repeats, 3), 2)
  return 2.0 * size ** 3 / median / 1e9


def build_model():
  from deeplab2_kmax import model as model_lib  # lazy: after the TF log level is set
  from deeplab2_kmax.app import configs  # lazy: after the TF log level is set
  configs.parse_config([FLAGS.gin_file], FLAGS.gin_bindings)
  model = model_lib.build_model(num_classes=FLAGS.num_classes,
                                dtype_policy=FLAGS.dtype_policy)
  model(np.zeros((1, 65, 65, 3), "float32"), training=False)
  return model


def make_forward(model, size, mode, merger):
  # Return every inference output, so that graph pruning cannot skip any of them: the
  # deeplab2 baseline returns its whole inference dict, which (deeplab2
  # kmax_deeplab._inference) leaves out the per-layer aux outputs; with the merge,
  # its maps too.
  def forward(images):
    outputs = model(images, training=False)
    outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
    if merger is not None:
      outputs = dict(outputs, merged=merger(outputs, output_size=(size, size)))
    return outputs
  return tf.function(forward, jit_compile=(mode == "xla"), autograph=False)


def main(argv):
  del argv
  from deeplab2_kmax.tools import model_stats  # lazy: after the TF log level is set
  # The reference matmul runs in the model's compute dtype (bfloat16 for
  # mixed_bfloat16), so fraction_of_matmul compares like with like.
  matmul_dtype = "bfloat16" if "bfloat16" in FLAGS.dtype_policy else "float32"
  matmul = matmul_gflops(FLAGS.matmul_size, FLAGS.repeats, tf.as_dtype(matmul_dtype))
  print(json.dumps({"bench": "matmul", "size": FLAGS.matmul_size,
                    "dtype": matmul_dtype, "gflops_per_s": round(matmul, 1)}),
        flush=True)
  model = build_model()
  merger = None
  if FLAGS.post_process:
    from deeplab2_kmax import post_processing  # lazy: after the TF log level is set
    merger = post_processing.MaskWiseMerger(
        thing_train_ids=list(range(min(COCO_NUM_THING_CLASSES, FLAGS.num_classes))),
        # COCO's divisor; Cityscapes' where 256 queries need instance ids up to 256.
        label_divisor=256 if model.num_queries < 256 else 1000, ignore_label=255,
        mask_stride=model.output_stride)
  for size in [int(s) for s in FLAGS.sizes]:
    graph_median = None
    spec = tf.TensorSpec((1, size, size, 3), tf.float32)
    model_graph = tf.function(lambda x: model(x, training=False),
                              autograph=False).get_concrete_function(spec).graph
    macs = model_stats.graph_macs(model_graph)["total"]
    images = tf.random.uniform((1, size, size, 3), 0, 255, seed=0)
    for mode in FLAGS.modes:
      record = {"bench": "model_forward", "gin_file": FLAGS.gin_file, "size": size,
                "batch": 1, "mode": mode, "dtype_policy": FLAGS.dtype_policy,
                "post_process": FLAGS.post_process,
                "repeats": FLAGS.repeats, "gmacs": round(macs / 1e9, 2),
                "matmul_gflops_per_s": round(matmul, 1)}
      if mode == "xla" and merger is not None and not FLAGS.xla_post_process:
        record["skipped"] = "xla with --post_process needs --xla_post_process"
        print(json.dumps(record), flush=True)
        continue
      try:
        fn = make_forward(model, size, mode, merger)
        start = time.perf_counter()
        _block(fn(images))
        record["first_call_s"] = round(time.perf_counter() - start, 3)
        median, fastest = _median_time(fn, (images,), FLAGS.repeats, FLAGS.warmup)
      except Exception as e:  # pylint: disable=broad-except
        record["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        print(json.dumps(record), flush=True)
        continue
      gflops = 2.0 * macs / median / 1e9
      record.update({
          "median_s": round(median, 4), "min_s": round(fastest, 4),
          "gflops_per_s": round(gflops, 1),
          "fraction_of_matmul": round(gflops / matmul, 3),
          "max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                               / 2 ** 20, 2),
      })
      baseline = DEEPLAB2_SECONDS.get((mode, FLAGS.post_process, size))
      if baseline is not None:
        record["deeplab2_s"] = baseline
        record["ratio_to_deeplab2"] = round(median / baseline, 3)
        target = TARGET_RATIO.get((mode, FLAGS.post_process))
        if target is not None:
          record["target_ratio"] = target
          record["meets_target"] = median / baseline <= target
      if mode == "graph":
        graph_median = median
      elif graph_median is not None:
        record["ratio_to_our_graph"] = round(median / graph_median, 3)
        record["meets_target"] = median <= graph_median
      print(json.dumps(record), flush=True)


if __name__ == "__main__":
  sys.setrecursionlimit(10000)
  app.run(main)
