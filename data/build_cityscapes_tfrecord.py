r"""Converts Cityscapes panoptic (cityscapesscripts `createPanopticImgs` output).

  python data/build_cityscapes_tfrecord.py --cityscapes_root=DIR --split=val \
      --output_dir=DIR [--num_shards=N] [--num_workers=K]

Reads DIR/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png,
DIR/gtFine/cityscapes_panoptic_<split>.json and DIR/gtFine/cityscapes_panoptic_<split>/.
The JSON must use Cityscapes label ids (createPanopticImgs without --use-train-id); they
map to the 19 trainIds (8 thing classes). Label divisor 1000, ignore label 255.
"""
from __future__ import annotations

import os

from absl import flags

from data import converter, converter_cli
from deeplab2_kmax.core import cli
from deeplab2_kmax.core.dataset_info import Category, DatasetInfo

LABEL_DIVISOR = 1000
IGNORE_LABEL = 255

# (label id, trainId, name, hasInstances, color) for the 19 evaluated classes.
CITYSCAPES_CLASSES = [
    (7, 0, "road", 0, (128, 64, 128)), (8, 1, "sidewalk", 0, (244, 35, 232)),
    (11, 2, "building", 0, (70, 70, 70)), (12, 3, "wall", 0, (102, 102, 156)),
    (13, 4, "fence", 0, (190, 153, 153)), (17, 5, "pole", 0, (153, 153, 153)),
    (19, 6, "traffic light", 0, (250, 170, 30)), (20, 7, "traffic sign", 0, (220, 220, 0)),
    (21, 8, "vegetation", 0, (107, 142, 35)), (22, 9, "terrain", 0, (152, 251, 152)),
    (23, 10, "sky", 0, (70, 130, 180)), (24, 11, "person", 1, (220, 20, 60)),
    (25, 12, "rider", 1, (255, 0, 0)), (26, 13, "car", 1, (0, 0, 142)),
    (27, 14, "truck", 1, (0, 0, 70)), (28, 15, "bus", 1, (0, 60, 100)),
    (31, 16, "train", 1, (0, 80, 100)), (32, 17, "motorcycle", 1, (0, 0, 230)),
    (33, 18, "bicycle", 1, (119, 11, 32)),
]


def cityscapes_info() -> DatasetInfo:
  cats = [Category(id=i, train_id=t, name=n, isthing=th, color=c)
          for i, t, n, th, c in CITYSCAPES_CLASSES]
  return DatasetInfo(name="cityscapes_panoptic", label_divisor=LABEL_DIVISOR,
                     ignore_label=IGNORE_LABEL, categories=cats)


def convert_cityscapes(cityscapes_root: str, split: str, output_dir: str, num_shards: int,
                       num_workers: int = 1, overwrite: bool = False) -> DatasetInfo:
  gt = os.path.join(cityscapes_root, "gtFine")
  json_path = os.path.join(gt, f"cityscapes_panoptic_{split}.json")
  image_root = os.path.join(cityscapes_root, "leftImg8bit", split)

  def image_subpath(name: str) -> str:  # <city>/<city>_<seq>_<frame>_leftImg8bit.png
    return os.path.join(name.split("_")[0], name)

  tasks, categories = converter.tasks_from_panoptic_json(
      json_path, os.path.join(gt, f"cityscapes_panoptic_{split}"), image_root,
      image_subpath)
  info = cityscapes_info()
  converter_cli.check_json_categories(
      categories, json_path, info, "Cityscapes",
      "one of the 19 Cityscapes label ids (was the JSON made with --use-train-id?)")
  return converter.convert(tasks, info, output_dir, split, num_shards, num_workers,
                           source=json_path, overwrite=overwrite)


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("cityscapes_root", None, "Folder with leftImg8bit/ and gtFine/.")
  converter_cli.define_output_flags(num_shards=10)
  flags.adopt_module_key_flags(converter_cli)
  flags.mark_flag_as_required("cityscapes_root")


def main(argv):
  del argv
  converter_cli.run_and_report(lambda: convert_cityscapes(
      FLAGS.cityscapes_root, FLAGS.split, FLAGS.output_dir, FLAGS.num_shards,
      FLAGS.num_workers, FLAGS.overwrite), FLAGS.split, FLAGS.output_dir)


def entry():
  """Console-script entry point."""
  _define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
