"""The tf.train.Example layout of our panoptic TFRecords (one owner of the feature keys).

Each record holds
  image/encoded        the original image file bytes (JPEG or PNG, unchanged)
  image/format         b"jpeg" | b"png"
  image/height, image/width
  image/id             image id (string; COCO ints are stringified)
  image/id_is_int      1 when the source id was an integer (dump gives back an int)
  image/filename       original image file name
  panoptic/encoded     RGB PNG of the *internal* label (semantic * D + instance, train
                       ids, void = ignore * D) stored as R + 256 G + 256^2 B: lossless,
                       compact, and wide enough for label divisor 1000
  panoptic/format      b"png_rgb24"

`parse_example(serialized)` -> {"image": uint8 [H,W,3], "panoptic": int32 [H,W],
"height", "width": int32, "image_id", "file_name": string}.
"""
from __future__ import annotations

import numbers
import re
from typing import Any, Iterator, Optional, Sequence

import tensorflow as tf

from deeplab2_kmax.core.cli import UserError

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_ID = "image/id"
IMAGE_ID_IS_INT = "image/id_is_int"
IMAGE_FILENAME = "image/filename"
PANOPTIC_ENCODED = "panoptic/encoded"
PANOPTIC_FORMAT = "panoptic/format"
PANOPTIC_FORMAT_VALUE = b"png_rgb24"

_FEATURES = {
    IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=b"jpeg"),
    IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    IMAGE_ID: tf.io.FixedLenFeature([], tf.string),
    IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    PANOPTIC_ENCODED: tf.io.FixedLenFeature([], tf.string),
    PANOPTIC_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=PANOPTIC_FORMAT_VALUE),
}

_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord$")


def shard_name(split: str, index: int, num_shards: int) -> str:
  """`<split>-00000-of-0000N.tfrecord`."""
  return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_pattern(output_dir: str, split: str) -> str:
  return f"{output_dir.rstrip('/')}/{split}-*-of-*.tfrecord"


def _bytes(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def make_example(image_bytes: bytes, image_format: str, height: int, width: int,
                 image_id: Any, file_name: str, panoptic_png: bytes) -> tf.train.Example:
  return tf.train.Example(features=tf.train.Features(feature={
      IMAGE_ENCODED: _bytes(image_bytes),
      IMAGE_FORMAT: _bytes(image_format.encode()),
      IMAGE_HEIGHT: _int(height),
      IMAGE_WIDTH: _int(width),
      IMAGE_ID: _bytes(str(image_id).encode()),
      IMAGE_ID_IS_INT: _int(isinstance(image_id, numbers.Integral)
                            and not isinstance(image_id, bool)),
      IMAGE_FILENAME: _bytes(file_name.encode()),
      PANOPTIC_ENCODED: _bytes(panoptic_png),
      PANOPTIC_FORMAT: _bytes(PANOPTIC_FORMAT_VALUE),
  }))


def decode_rgb24(png: tf.Tensor) -> tf.Tensor:
  """RGB PNG bytes -> int32 [H, W] with value R + 256 G + 65536 B."""
  rgb = tf.cast(tf.io.decode_png(png, channels=3), tf.int32)
  return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """Parses and decodes one serialized record (graph-compatible)."""
  f = tf.io.parse_single_example(serialized, _FEATURES)
  image = tf.io.decode_image(f[IMAGE_ENCODED], channels=3, expand_animations=False)
  height = tf.cast(f[IMAGE_HEIGHT], tf.int32)
  width = tf.cast(f[IMAGE_WIDTH], tf.int32)
  image = tf.ensure_shape(image, [None, None, 3])
  panoptic = decode_rgb24(f[PANOPTIC_ENCODED])
  check = tf.debugging.assert_equal(
      tf.shape(panoptic), tf.stack([height, width]),
      message="panoptic label size != image/height, image/width")
  with tf.control_dependencies([check]):
    panoptic = tf.identity(panoptic)
  return {"image": image, "panoptic": panoptic, "height": height, "width": width,
          "image_id": f[IMAGE_ID], "file_name": f[IMAGE_FILENAME]}


def image_id_of(example: tf.train.Example):
  """The record's image id as the source had it (int or str)."""
  feature = example.features.feature
  text = feature[IMAGE_ID].bytes_list.value[0].decode()
  if IMAGE_ID_IS_INT in feature and feature[IMAGE_ID_IS_INT].int64_list.value[0]:
    return int(text)
  return text


def read_records(path: str) -> Iterator[bytes]:
  """The serialized records of one file; a corrupt or truncated file is a UserError
  naming it and the number of records read before the damage."""
  count = 0
  try:
    for raw in tf.data.TFRecordDataset(path):
      yield raw.numpy()
      count += 1
  except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
    raise UserError(f"{path}: corrupt or truncated TFRecord file after {count} good "
                    f"records ({e.message.splitlines()[0]})") from e


def read_split(pattern: str, max_examples: int = 0,
               flag: str = "--verify_tfrecord") -> Iterator[bytes]:
  """The serialized records of every file matching `pattern` (sorted), at most
  `max_examples` of them (0: all); no match or a damaged file is a UserError naming
  `flag` or the file."""
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise UserError(f"{flag}={pattern}: matches no file")
  count = 0
  for path in files:
    for record in read_records(path):
      if max_examples and count >= max_examples:
        return
      yield record
      count += 1


def locate_corruption(files: Sequence[str]) -> Optional[str]:
  """After a DataLossError from a pipeline over `files`: the message naming the first
  damaged file (None if every file reads)."""
  for path in files:
    try:
      for _ in read_records(path):
        pass
    except UserError as e:
      return str(e)
  return None
