"""The tf.train.Example layout of our panoptic TFRecords (one owner of the feature keys).

Each record holds
  image/encoded        the original image file bytes (JPEG or PNG, unchanged)
  image/format         b"jpeg" | b"png"
  image/height, image/width
  image/id             image id (string; COCO ints are stringified)
  image/filename       original image file name
  panoptic/encoded     RGB PNG of the *internal* label (semantic * D + instance, train
                       ids, void = ignore * D) stored as R + 256 G + 256^2 B: lossless,
                       compact, and wide enough for label divisor 1000
  panoptic/format      b"png_rgb24"

`parse_example(serialized)` -> {"image": uint8 [H,W,3], "panoptic": int32 [H,W],
"height", "width": int32, "image_id", "file_name": string}.
"""
from __future__ import annotations

import re
from typing import Any

import tensorflow as tf

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_ID = "image/id"
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
