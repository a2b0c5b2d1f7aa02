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

from absl import flags

from data import ade20k_categories
from data import converter, converter_cli
from data.panoptic_io import DataValidationError
from deeplab2_kmax.core import cli
from deeplab2_kmax.core.dataset_info import DatasetInfo

IMAGE_FOLDERS = {"train": "training", "val": "validation"}


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
  converter_cli.check_json_categories(
      categories, json_path, info, "ADE20K-150",
      f"an ADE20K-150 id 0..{info.num_classes - 1} (0-based, as prepare_ade20k_pan_seg.py "
      "writes)", " (are the ids shifted by one?)")
  return converter.convert(tasks, info, output_dir, split, num_shards, num_workers,
                           source=json_path, overwrite=overwrite)


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("ade20k_root", None, "Folder with images/ and ade20k_panoptic_*.")
  converter_cli.define_output_flags(num_shards=10)
  flags.adopt_module_key_flags(converter_cli)
  flags.mark_flag_as_required("ade20k_root")


def main(argv):
  del argv
  converter_cli.run_and_report(lambda: convert_ade20k(
      FLAGS.ade20k_root, FLAGS.split, FLAGS.output_dir, FLAGS.num_shards,
      FLAGS.num_workers, FLAGS.overwrite), FLAGS.split, FLAGS.output_dir)


def entry():
  """Console-script entry point."""
  _define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
