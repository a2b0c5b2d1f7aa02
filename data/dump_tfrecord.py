r"""Writes TFRecords back as a COCO-panoptic-format dataset.

  python data/dump_tfrecord.py --input_pattern="out/val-*.tfrecord" --output_dir=DIR \
      [--dataset_info=out/dataset_info.json]

Output: DIR/images/<file_name> (the stored image bytes, unchanged),
DIR/panoptic/<stem>.png (COCO ids R + 256 G + 256^2 B, renumbered 1..S per image),
DIR/panoptic.json (images, annotations with segments_info, categories from
dataset_info.json). Converting then dumping gives back every pixel's category and the
segment partition (crowd segments of one class in one image are merged, as in PQ).
`--dataset_info` defaults to dataset_info.json beside the first shard.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf
from absl import flags
from tqdm import tqdm


from data.converter import label_spec
from data import panoptic_io
from data import tfrecord_format
from deeplab2_kmax.core import cli
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core.dataset_info import DatasetInfo
from deeplab2_kmax.core import safe_paths

FLAGS = flags.FLAGS


def _records(files):
  for path in files:
    for index, raw in enumerate(tfrecord_format.read_records(path)):
      try:
        example = tf.train.Example.FromString(raw)
      except Exception as e:  # pylint: disable=broad-except  (protobuf DecodeError)
        raise UserError(f"{path}: record {index} is not a tf.train.Example ({e})") from e
      yield path, index, example


def dump(input_pattern: str, output_dir: str, dataset_info: str | None = None) -> str:
  """Dumps all matching records; returns the path of the written panoptic JSON."""
  files = sorted(tf.io.gfile.glob(input_pattern))
  if not files:
    raise UserError(f"--input_pattern={input_pattern}: matches no files")
  info = DatasetInfo.load(dataset_info or os.path.dirname(os.path.abspath(files[0])))
  spec = label_spec(info)
  image_dir = os.path.join(output_dir, "images")
  png_dir = os.path.join(output_dir, "panoptic")
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(png_dir, exist_ok=True)
  images, annotations = [], []
  seen_names = set()
  for path, index, example in tqdm(_records(files), desc="dump", unit="ex"):
    feat = example.features.feature
    get_bytes = lambda key: feat[key].bytes_list.value[0]
    image_id = tfrecord_format.image_id_of(example)
    file_name = get_bytes(tfrecord_format.IMAGE_FILENAME).decode()
    what = f"image/filename of record {index}"
    if not file_name:
      file_name, what = f"{image_id}.jpg", f"image/id of record {index}"
    if file_name in seen_names:
      raise UserError(f"{path}: duplicate image file name {file_name!r}")
    seen_names.add(file_name)
    png_name = os.path.splitext(file_name)[0] + ".png"
    image_path = safe_paths.inside_for_writing(image_dir, file_name, path, what)
    png_path = safe_paths.inside_for_writing(png_dir, png_name, path, what)
    label = panoptic_io.decode_id_png(get_bytes(tfrecord_format.PANOPTIC_ENCODED),
                                      f"{path}:{image_id}")
    ids, segments = panoptic_io.internal_to_coco(label, spec, info.train_id_to_category_id)
    with open(image_path, "wb") as f:
      f.write(get_bytes(tfrecord_format.IMAGE_ENCODED))
    with open(png_path, "wb") as f:
      f.write(panoptic_io.encode_id_png(ids))
    height, width = label.shape
    images.append({"id": image_id, "file_name": file_name, "height": int(height),
                   "width": int(width)})
    annotations.append({"image_id": image_id, "file_name": png_name,
                        "segments_info": segments})
  json_path = os.path.join(output_dir, "panoptic.json")
  with open(json_path, "w") as f:
    json.dump({"images": images, "annotations": annotations,
               "categories": info.coco_categories()}, f)
  return json_path


def _define_flags():
  flags.DEFINE_string("input_pattern", None, "Glob of the TFRecord shards.")
  flags.DEFINE_string("output_dir", None, "Where to write images/, panoptic/, panoptic.json.")
  flags.DEFINE_string("dataset_info", None, "dataset_info.json (default: beside the shards).")
  flags.mark_flag_as_required("input_pattern")
  flags.mark_flag_as_required("output_dir")


def main(argv):
  del argv
  path = dump(FLAGS.input_pattern, FLAGS.output_dir, FLAGS.dataset_info)
  print(f"wrote {path}")


def entry():
  """Console-script entry point."""
  _define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
