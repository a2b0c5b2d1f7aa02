r"""Hungarian matching speed: our in-graph XLA matcher vs scipy, one JSON line per case.

  python benchmarks/hungarian_matching.py [--repeats=7] [--batch_sizes=1,8] \
      [--num_valid=40,128] [--num_predictions=128] [--num_slots=128]

For every batch size B, number of valid ground-truth segments M and cost distribution
the script times one matching call on the same [B, N, slots] cost matrices:

* `xla_ms`: `losses.hungarian_matching.hungarian_matching(cost, valid)` inside
  `tf.function(jit_compile=True)` (compiled once before timing; the result is fetched
  with `.numpy()` so the time includes finishing the computation);
* `scipy_ms` (the baseline, same run, same matrices): `scipy.optimize.
  linear_sum_assignment` on each example's [N, M] valid block in a Python loop. scipy
  runs on host numpy arrays and cannot run inside a tf.function / XLA graph (a
  `numpy_function` would break jit_compile and force a device-host sync every step), so
  it is a speed reference only, not an alternative for the train step.

Cost distributions: `uniform` U[0, 1); `near_equal` 0.5 + 1e-4 * U[0, 1) (almost all
ties: long augmenting paths, the hard case of shortest-path Hungarian solvers). Each
line also reports `max_cost_gap`, the largest difference between the two solvers'
optimal total costs (both are exact; float rounding only). Times are medians over
`--repeats` calls after one warm-up call.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

from absl import app
from absl import flags
import numpy as np
from scipy.optimize import linear_sum_assignment
import tensorflow as tf

from deeplab2_kmax.losses.hungarian_matching import hungarian_matching

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 7, "Timed calls per case (the median is reported).")
flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes B.")
flags.DEFINE_list("num_valid", ["40", "128"], "Valid ground-truth segments M.")
flags.DEFINE_list("distributions", ["uniform", "near_equal"], "Cost distributions.")
flags.DEFINE_integer("num_predictions", 128, "Predictions N (queries).")
flags.DEFINE_integer("num_slots", 128, "Ground-truth slots (max_segments); the first M "
                     "are valid, the rest padding.")
flags.DEFINE_integer("seed", 0, "Cost matrix seed.")


def _emit(**record):
  print(json.dumps(record), flush=True)


def _costs(rng, distribution: str, batch: int, num_pred: int, num_slots: int):
  uniform = rng.random((batch, num_pred, num_slots), dtype=np.float32)
  if distribution == "uniform":
    return uniform
  if distribution == "near_equal":
    return (0.5 + 1e-4 * uniform).astype(np.float32)
  raise ValueError(f"--distributions: unknown distribution {distribution!r}")


def _median_ms(fn, repeats: int) -> tuple[float, object]:
  result = fn()  # warm-up (and XLA compilation for the first call of a shape)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times), result


def main(argv):
  del argv
  matcher = tf.function(hungarian_matching, jit_compile=True)
  rng = np.random.default_rng(FLAGS.seed)
  n, slots = FLAGS.num_predictions, FLAGS.num_slots
  _emit(benchmark="hungarian_matching", tf_version=tf.__version__,
        devices=[d.device_type for d in tf.config.list_logical_devices()],
        cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
        repeats=FLAGS.repeats,
        note="scipy.optimize.linear_sum_assignment is the host-side baseline: it "
             "cannot run inside tf.function(jit_compile=True), so it is not usable in "
             "the XLA train step")
  for distribution in FLAGS.distributions:
    for batch in (int(b) for b in FLAGS.batch_sizes):
      for m in (int(v) for v in FLAGS.num_valid):
        if not 0 < m <= min(n, slots):
          raise ValueError(f"--num_valid {m} must be in [1, min(N, slots)]")
        cost = _costs(rng, distribution, batch, n, slots)
        valid = np.zeros((batch, slots), np.float32)
        valid[:, :m] = 1.0
        cost_t, valid_t = tf.constant(cost), tf.constant(valid)
        start = time.perf_counter()
        matcher(cost_t, valid_t).numpy()
        compile_s = time.perf_counter() - start
        xla_ms, indices = _median_ms(lambda: matcher(cost_t, valid_t).numpy(),
                                     FLAGS.repeats)

        def scipy_all():
          return [linear_sum_assignment(cost[b, :, :m]) for b in range(batch)]

        scipy_ms, solutions = _median_ms(scipy_all, FLAGS.repeats)
        gaps = []
        for b, (rows, cols) in enumerate(solutions):
          ours = float(cost[b, indices[b, :m], np.arange(m)].astype(np.float64).sum())
          ref = float(cost[b, rows, cols].astype(np.float64).sum())
          gaps.append(abs(ours - ref))
        assert np.all(indices[:, m:] == -1)
        _emit(case="matching", distribution=distribution, batch=batch,
              num_predictions=n, num_slots=slots, num_valid=m,
              xla_ms=round(xla_ms, 3), scipy_ms=round(scipy_ms, 3),
              xla_over_scipy=round(xla_ms / scipy_ms, 2),
              first_call_s=round(compile_s, 2), max_cost_gap=max(gaps),
              scipy_in_graph=False)


if __name__ == "__main__":
  app.run(main)
