r"""Converts a COCO-panoptic-format dataset (COCO, the synthetic set, custom data).

  python data/build_coco_tfrecord.py --image_dir=DIR --panoptic_json=FILE \
      --panoptic_dir=DIR --output_dir=DIR --split=val --num_shards=N [--num_workers=K]

Writes `<output_dir>/<split>-0000i-of-0000N.tfrecord`, `<output_dir>/dataset_info.json`
(train ids assigned in increasing order of the JSON's category ids) and
`<output_dir>/conversion_<split>.json` (what was converted). Re-running the same command
resumes (complete shards are kept); a different conversion of the split into the same
folder is refused unless --overwrite. Refusals print one line `error: <file/flag>: ...`
(exit status 2; --verbose for the traceback).
"""
from absl import flags

from data import converter, converter_cli
from deeplab2_kmax.core import cli

FLAGS = flags.FLAGS


def _define_flags():
  """Defined only when run as a script (modules stay importable together)."""
  flags.DEFINE_string("image_dir", None, "Folder of the images (e.g. val2017).")
  flags.DEFINE_string("panoptic_json", None, "COCO panoptic JSON (segments_info, categories).")
  flags.DEFINE_string("panoptic_dir", None, "Folder of the panoptic PNGs.")
  converter_cli.define_output_flags(num_shards=8,
                                    split_help="Split name used in the shard names.")
  flags.adopt_module_key_flags(converter_cli)
  flags.DEFINE_integer("label_divisor", 256, "Internal label divisor.")
  flags.DEFINE_integer("ignore_label", 255, "Train id of void.")
  flags.DEFINE_string("dataset_name", "coco_panoptic", "Name stored in dataset_info.json.")
  for name in ("image_dir", "panoptic_json", "panoptic_dir"):
    flags.mark_flag_as_required(name)


def main(argv):
  del argv
  converter_cli.run_and_report(lambda: converter.convert_coco_panoptic(
      FLAGS.image_dir, FLAGS.panoptic_json, FLAGS.panoptic_dir, FLAGS.output_dir,
      FLAGS.split, FLAGS.num_shards, FLAGS.num_workers, FLAGS.label_divisor,
      FLAGS.ignore_label, FLAGS.dataset_name, FLAGS.overwrite), FLAGS.split, FLAGS.output_dir)


def entry():
  """Console-script entry point."""
  _define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
