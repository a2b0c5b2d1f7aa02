r"""Converts ADE20K panoptic (COCO-panoptic format, Mask2Former's layout).

  python data/build_ade20k_tfrecord.py --ade20k_root=DIR --split=val --output_dir=DIR \
      [--num_shards=N] [--num_workers=K]

Reads DIR/ade20k_panoptic_<split>.json, the PNGs in DIR/ade20k_panoptic_<split>/ and
the images in DIR/images/training/ (train) or DIR/images/validation/ (val). The JSON's
category ids must be the 0-based ADE20K-150 ids that Mask2Former's
`prepare_ade20k_pan_seg.py` writes; category id t becomes train id t, deeplab2's class
order (data/ade20k_categories.py). Label divisor 1000, ignore label 255.
Bad input stops the conversion with one `error: ...` line naming the file and segment
(exit status 2, `deeplab2_kmax/core/cli.py`); a different conversion of the split into --output_dir is
refused unless --overwrite (`data/converter.py`).
"""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

from absl import flags

from data import ade20k_categories
from data import converter
from data.panoptic_io import DataValidationError
from deeplab2_kmax.core import cli
from deeplab2_kmax.core.dataset_info import DatasetInfo

IMAGE_FOLDERS = {"train": "training", "val": "validation"}


def check_json_categories(json_categories: Sequence[dict[str, Any]], json_path: str,
                          info: DatasetInfo) -> None:
  """The JSON's categories must be ADE20K-150 ids 0..149 with the right isthing flags."""
  known = {c.id: c for c in info.categories}
  for cat in json_categories:
    cid = int(cat["id"])
    if cid not in known:
      raise DataValidationError(
          f"{json_path}: category id {cid} ({cat.get('name')}) is not an ADE20K-150 id "
          f"0..{info.num_classes - 1} (0-based, as prepare_ade20k_pan_seg.py writes)")
    if "isthing" in cat and int(cat["isthing"]) != known[cid].isthing:
      raise DataValidationError(
          f"{json_path}: category id {cid} ({cat.get('name')}) has isthing "
          f"{int(cat['isthing'])}, but ADE20K-150 class {cid} is {known[cid].name!r} with "
          f"isthing {known[cid].isthing} (are the ids shifted by one?)")


def convert_ade20k(ade20k_root: str, split: str, output_dir: str, num_shards: int,
                   num_workers: int = 1, overwrite: bool = False) -> DatasetInfo:
  """The whole conversion of one split; returns the updated DatasetInfo."""
  if split not in IMAGE_FOLDERS:
    raise DataValidationError(f"--split={split}: ADE20K splits are train and val")
  json_path = os.path.join(ade20k_root, f"ade20k_panoptic_{split}.json")
  image_dir = os.path.join(ade20k_root, "images", IMAGE_FOLDERS[split])
  tasks, categories = converter.tasks_from_panoptic_json(
      json_path, os.path.join(ade20k_root, f"ade20k_panoptic_{split}"), image_dir)
  info = ade20k_categories.ade20k_info()
  check_json_categories(categories, json_path, info)
  return converter.convert(tasks, info, output_dir, split, num_shards, num_workers,
                           source=json_path, overwrite=overwrite)


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("ade20k_root", None, "Folder with images/ and ade20k_panoptic_*.")
  flags.DEFINE_string("split", "val", "train | val.")
  flags.DEFINE_string("output_dir", None, "Where shards and dataset_info.json go.")
  flags.DEFINE_integer("num_shards", 10, "Number of shards.")
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Worker processes.")
  flags.DEFINE_bool("overwrite", False, "Replace another conversion of --split found in "
                    "--output_dir (its shards are deleted) instead of refusing.")
  flags.mark_flag_as_required("ade20k_root")
  flags.mark_flag_as_required("output_dir")


def main(argv):
  del argv
  start = time.time()
  info = convert_ade20k(FLAGS.ade20k_root, FLAGS.split, FLAGS.output_dir,
                        FLAGS.num_shards, FLAGS.num_workers, FLAGS.overwrite)
  n = info.num_examples[FLAGS.split]
  seconds = time.time() - start
  print(f"wrote {n} {FLAGS.split} examples to {FLAGS.output_dir} in {seconds:.1f} s "
        f"({n / max(seconds, 1e-9):.1f} examples/s)")


def entry():
  """Console-script entry point."""
  _define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
