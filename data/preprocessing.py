"""Geometric preprocessing of an (image, panoptic label) pair, graph-mode TF.

Training: random scale (image bilinear, label nearest) -> pad to at least the crop size
(image with `image_pad_value`, label with void) at a random offset -> random crop ->
random horizontal flip. All randomness is stateless from one `seed` [2] so a pipeline
with a fixed seed is reproducible.
Eval: shrink to fit only when larger than the eval size (keeping the aspect ratio),
then pad bottom/right (top-left aligned) to the eval size.
"""
from __future__ import annotations

import tensorflow as tf

IMAGE_PAD_VALUE = 127.5  # the model maps it to 0 with x / 127.5 - 1


def _resize_pair(image, label, new_size):
  image = tf.image.resize(image, new_size, method="bilinear")
  label = tf.image.resize(label[..., None], new_size, method="nearest")[..., 0]
  return image, label


def random_scale(image: tf.Tensor, label: tf.Tensor, min_scale: float, max_scale: float,
                 seed: tf.Tensor):
  """Scales by s ~ U[min_scale, max_scale]; image float32, label int32."""
  image = tf.cast(image, tf.float32)
  if min_scale == max_scale == 1.0:
    return image, label
  scale = tf.random.stateless_uniform([], seed, min_scale, max_scale)
  size = tf.cast(tf.shape(label), tf.float32)
  new_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
  return _resize_pair(image, label, new_size)


def pad_to_at_least(image, label, size, void_value, offset=(0, 0),
                    image_pad_value=IMAGE_PAD_VALUE):
  """Pads so the pair is at least `size`; the content starts at `offset` (y, x)."""
  shape = tf.shape(label)
  pad_h = tf.maximum(size[0] - shape[0], 0)
  pad_w = tf.maximum(size[1] - shape[1], 0)
  oy = tf.minimum(tf.cast(offset[0], tf.int32), pad_h)
  ox = tf.minimum(tf.cast(offset[1], tf.int32), pad_w)
  paddings = [[oy, pad_h - oy], [ox, pad_w - ox]]
  image = tf.pad(image, paddings + [[0, 0]], constant_values=image_pad_value)
  label = tf.pad(label, paddings, constant_values=void_value)
  return image, label


def random_crop_and_flip(image, label, crop_size, void_value, seed,
                         image_pad_value=IMAGE_PAD_VALUE):
  """Pads at a random offset when smaller, crops a random window, flips half the time."""
  s_pad, s_crop, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  shape = tf.shape(label)
  pad_room = tf.maximum(tf.constant(crop_size, tf.int32) - shape, 0)
  offset = tf.random.stateless_uniform([2], s_pad, 0, tf.int32.max, dtype=tf.int32) % (
      pad_room + 1)
  image, label = pad_to_at_least(image, label, crop_size, void_value, (offset[0], offset[1]),
                                 image_pad_value)
  shape = tf.shape(label)
  room = shape - tf.constant(crop_size, tf.int32)
  start = tf.random.stateless_uniform([2], s_crop, 0, tf.int32.max, dtype=tf.int32) % (
      room + 1)
  image = image[start[0]:start[0] + crop_size[0], start[1]:start[1] + crop_size[1]]
  label = label[start[0]:start[0] + crop_size[0], start[1]:start[1] + crop_size[1]]
  flip = tf.random.stateless_uniform([], s_flip) < 0.5
  image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
  image = tf.ensure_shape(image, [crop_size[0], crop_size[1], 3])
  label = tf.ensure_shape(label, [crop_size[0], crop_size[1]])
  return image, label


def resize_to_fit_and_pad(image, label, eval_size, void_value,
                          image_pad_value=IMAGE_PAD_VALUE):
  """Eval: shrink (aspect kept) only if larger than `eval_size`, then pad top-left aligned.

  When no shrinking happens (eval size >= image size, the normal case) the label is
  exact, so PQ on `labels["panoptic"][:h, :w]` equals PQ on the original annotation.
  """
  image = tf.cast(image, tf.float32)
  shape = tf.shape(label)
  size_f = tf.cast(shape, tf.float32)
  scale = tf.minimum(tf.minimum(eval_size[0] / size_f[0], eval_size[1] / size_f[1]), 1.0)

  def shrink():
    new_size = tf.minimum(tf.cast(tf.round(size_f * scale), tf.int32),
                          tf.constant(eval_size, tf.int32))
    return _resize_pair(image, label, tf.maximum(new_size, 1))

  image, label = tf.cond(scale < 1.0, shrink, lambda: (image, label))
  image, label = pad_to_at_least(image, label, eval_size, void_value,
                                 image_pad_value=image_pad_value)
  image = tf.ensure_shape(image, [eval_size[0], eval_size[1], 3])
  label = tf.ensure_shape(label, [eval_size[0], eval_size[1]])
  return image, label
