r"""Converter and input-pipeline throughput on the synthetic data, one JSON line each.

  python benchmarks/input_pipeline.py [--num_images=64] [--image_size=256] \
      [--batch_size=4] [--num_batches=8] [--windows=3] [--work_dir=DIR]

Lines: converter examples/s with 1 worker (baseline) and with --num_workers; then the
train pipeline (crops 641 and 1281, scale 0.5-2.0) and the eval pipeline (641), as the
median over `windows` timed windows of `num_batches` batches after one warm-up window.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time

from absl import app
from absl import flags

from data import converter
from data import input_pipeline
from data import make_synthetic

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", None, "Scratch folder (default: a temporary one).")
flags.DEFINE_integer("num_images", 64, "Synthetic images to generate and convert.")
flags.DEFINE_integer("image_size", 256, "Side of the synthetic images.")
flags.DEFINE_integer("num_workers", 2, "Converter worker processes.")
flags.DEFINE_integer("batch_size", 4, "Batch size of the pipelines.")
flags.DEFINE_integer("num_batches", 8, "Batches per timed window.")
flags.DEFINE_integer("windows", 3, "Timed windows (the median is reported).")


def _emit(**record):
  print(json.dumps(record), flush=True)


def _convert(src: dict, out: str, workers: int) -> float:
  shutil.rmtree(out, ignore_errors=True)
  start = time.perf_counter()
  converter.convert_coco_panoptic(src["image_dir"], src["panoptic_json"], src["panoptic_dir"],
                                  out, "val", 4, workers, dataset_name="synthetic")
  return FLAGS.num_images / (time.perf_counter() - start)


def _pipeline_rate(rec_dir: str, is_training: bool, crop: int) -> tuple[float, list[float]]:
  ds = input_pipeline.build_dataset(
      os.path.join(rec_dir, "val-*.tfrecord"), rec_dir, is_training, FLAGS.batch_size,
      crop_size=(crop, crop), min_scale=0.5, max_scale=2.0, seed=0, repeat=True)
  it = iter(ds)
  for _ in range(FLAGS.num_batches):  # warm-up
    next(it)
  rates = []
  for _ in range(FLAGS.windows):
    start = time.perf_counter()
    for _ in range(FLAGS.num_batches):
      next(it)
    rates.append(FLAGS.num_batches * FLAGS.batch_size / (time.perf_counter() - start))
  return statistics.median(rates), rates


def main(argv):
  del argv
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_input_")
  make_synthetic.write_split(work, "val", FLAGS.num_images, 0, FLAGS.image_size)
  src = dict(image_dir=os.path.join(work, "val"),
             panoptic_json=os.path.join(work, "annotations", "panoptic_val.json"),
             panoptic_dir=os.path.join(work, "annotations", "panoptic_val"))
  rec = os.path.join(work, "records")
  cores = os.cpu_count()
  for workers in sorted({1, FLAGS.num_workers}):
    _emit(benchmark="converter", num_workers=workers, num_images=FLAGS.num_images,
          image_size=FLAGS.image_size, cpu_count=cores,
          examples_per_s=round(_convert(src, rec, workers), 2))
  for is_training, crop in ((True, 641), (True, 1281), (False, 641)):
    median, rates = _pipeline_rate(rec, is_training, crop)
    _emit(benchmark="input_pipeline", mode="train" if is_training else "eval", crop=crop,
          batch_size=FLAGS.batch_size, image_size=FLAGS.image_size, cpu_count=cores,
          examples_per_s=round(median, 2), window_rates=[round(r, 2) for r in rates])
  if not FLAGS.work_dir:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
