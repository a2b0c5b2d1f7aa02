r"""Train-step time and peak memory of kMaX-DeepLab R50 (COCO config) on CPU.

  python benchmarks/train_step.py [--crop=513] [--batch_sizes=1,2] [--xla=0,1] \
      [--steps=5] [--warmup=2] [--profile=20] [--dtype_policy=float32,mixed_bfloat16]

One JSON line per (batch size, XLA) case, each measured in a fresh subprocess (so the
peak RSS is that case's): the median wall time of one full training step exactly as the
trainer runs it (`trainer.train_lib.Trainer`: forward with the auxiliary semantic branch,
KMaXLoss on the final and the 5 auxiliary outputs, gradients, KMaXAdamW update), on a
fixed synthetic batch (random image, ~20 random rectangles as segments), and the
process's peak resident memory. The first `warmup` calls (tracing, compilation) are not
timed. `--dtype_policy` (a comma list) measures each case under each Keras dtype policy,
set globally as `trainer/train.py --mixed_precision` does (mixed_bfloat16 on CPU: bf16
compute, float32 variables, the pixel-contrastive similarity matmuls in bf16). Each
line also carries deeplab2's numbers for the same step (DEEPLAB2: its own Trainer, loss
and optimizer at crop 513, run beside this project on the machine kind named there).
`--profile=N` traces one more step with the TensorFlow profiler and adds the N op
types with the most op time (seconds, summed over the step's ops; with two cores
ops overlap, so the sum exceeds the wall time) as "top_ops" to each line.
"""

import collections
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# deeplab2 (commit 64bc1c1, TF 2.15.1) train step at crop 513, float32, no XLA, run
# beside this project on 2026-12-06 on a 2-vCPU Xeon: seconds (median), peak GiB.
DEEPLAB2 = {1: (5.03, 7.1), 2: (9.65, 10.2)}


def fake_batch(batch: int, crop: int, num_classes: int = 133, seed: int = 0):
  """(features, labels) with the DESIGN.md keys, from random rectangle segments."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data.panoptic_targets import panoptic_targets  # lazy: TF-free parent
  rng = np.random.default_rng(seed)
  things = list(range(80))
  images, labels = [], []
  for _ in range(batch):
    panoptic = np.full((crop, crop), (80 + rng.integers(53)) * 256, np.int32)  # stuff bg
    for k in range(1, 21):
      y, x = rng.integers(0, crop - 40, size=2)
      h, w = rng.integers(20, crop // 3, size=2)
      cls = rng.integers(num_classes)
      panoptic[y:y + h, x:x + w] = cls * 256 + (k if cls in things else 0)
    targets = panoptic_targets(tf.constant(panoptic), num_classes, things, 256, 255, 128)
    targets["panoptic"] = tf.constant(panoptic)
    labels.append(targets)
    images.append(rng.uniform(0, 255, (crop, crop, 3)).astype(np.float32))
  stacked = {k: tf.stack([l[k] for l in labels]) for k in labels[0]}
  return {"image": tf.constant(np.stack(images))}, stacked


def profile_step(step_fn, top: int) -> dict:
  """{op type: seconds} of the `top` op types by op time in one traced step_fn()."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  totals = collections.Counter()
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    step_fn()
    tf.profiler.experimental.stop()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
      space = xplane_pb2.XSpace()
      with open(path, "rb") as f:
        space.ParseFromString(f.read())
      for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
          for event in line.events:
            name = names.get(event.metadata_id, "")
            # Op events are "<op name>:<op type>"; skip the executor/function wrappers.
            if ":" not in name:
              continue
            op_name, op_type = name.rsplit(":", 1)
            if (not op_type or op_type.startswith(" ") or op_type in ("Run", "Process")
                or op_name.startswith(("ExecutorState", "KernelAndDevice",
                                       "EagerLocalExecute", "Iterator", "__"))):
              continue
            totals[op_type] += event.duration_ps * 1e-12
  return {k: round(v, 3) for k, v in totals.most_common(top)}


def run_case(batch: int, crop: int, xla: bool, steps: int, warmup: int,
             profile: int = 0, dtype_policy: str = "float32") -> dict:
  """Measures one case in this process."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from deeplab2_kmax.losses.kmax_loss import KMaXLoss  # lazy: TF-free parent
  from deeplab2_kmax.model import build_model  # lazy: TF-free parent
  from trainer import optimizer as optimizer_lib  # lazy: TF-free parent
  from trainer import train_lib  # lazy: TF-free parent
  keras.utils.set_random_seed(0)
  keras.config.set_dtype_policy(dtype_policy)  # as trainer/experiment.py does
  strategy = tf.distribute.get_strategy()
  model = build_model(num_classes=133)  # the COCO R50 defaults
  optimizer = optimizer_lib.build_optimizer(
      total_steps=150000, backbone_pattern=train_lib.backbone_pattern_for(model))
  dataset = tf.data.Dataset.from_tensors(fake_batch(batch, crop)).repeat()
  with tempfile.TemporaryDirectory() as model_dir:
    trainer = train_lib.Trainer(model, KMaXLoss(), optimizer, strategy, model_dir,
                                steps_per_loop=1, checkpoint_every=0, jit_compile=xla,
                                checkpoint_input_pipeline=False, progress=False)
    iterator = trainer._setup(dataset)  # pylint: disable=protected-access
    times = []
    for i in range(warmup + steps):
      start = time.perf_counter()
      means, _, _ = trainer._run_loop(iterator, 1)  # pylint: disable=protected-access
      loss = float(means["total"])
      if i >= warmup:
        times.append(time.perf_counter() - start)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    top_ops = (profile_step(
        lambda: float(trainer._run_loop(iterator, 1)[0]["total"]),  # pylint: disable=protected-access
        profile) if profile else None)
  ref_time, ref_mem = DEEPLAB2.get(batch, (None, None))
  return {"benchmark": "train_step", "model": "kmax_r50_coco", "crop": crop,
          "batch": batch, "xla": xla, "dtype_policy": dtype_policy,
          "median_s": round(statistics.median(times), 4),
          "min_s": round(min(times), 4), "steps": steps, "peak_rss_gib": round(peak_gib, 3),
          "loss": round(loss, 4), "deeplab2_median_s": ref_time,
          "deeplab2_peak_gib": ref_mem,
          "time_ratio": round(statistics.median(times) / ref_time, 3) if ref_time else None,
          "memory_ratio": round(peak_gib / ref_mem, 3) if ref_mem else None,
          "load_average": round(os.getloadavg()[0], 2),
          **({"top_ops": top_ops} if top_ops else {})}


def main(argv):
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--crop", type=int, default=513)
  parser.add_argument("--batch_sizes", default="1,2")
  parser.add_argument("--xla", default="0,1", help="comma list of 0/1")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--profile", type=int, default=0,
                      help="add the N op types with the most op time of one more step")
  parser.add_argument("--dtype_policy", default="float32",
                      help="comma list of Keras dtype policies (float32, mixed_bfloat16)")
  parser.add_argument("--case", default="", help=argparse.SUPPRESS)  # batch,xla (child)
  args = parser.parse_args(argv)
  if args.case:
    batch, xla = (int(v) for v in args.case.split(","))
    print(json.dumps(run_case(batch, args.crop, bool(xla), args.steps, args.warmup,
                              args.profile, args.dtype_policy)),
          flush=True)
    return 0
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  status = 0
  cases = [(int(b), int(x), p) for p in args.dtype_policy.split(",")
           for b in args.batch_sizes.split(",") for x in args.xla.split(",")]
  for batch, xla, policy in cases:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--case={batch},{xla}",
         f"--crop={args.crop}", f"--steps={args.steps}", f"--warmup={args.warmup}",
         f"--profile={args.profile}", f"--dtype_policy={policy}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
      status = 1
      print(json.dumps({"benchmark": "train_step", "batch": batch, "xla": bool(xla),
                        "dtype_policy": policy,
                        "error": proc.stderr.strip().splitlines()[-1:]}), flush=True)
    else:
      print(lines[-1], flush=True)
  return status


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
