"""Loss targets from one internal panoptic map (graph-mode TF), see docs/DESIGN.md.

Segments: one per stuff class present and one per thing instance; crowd (thing class,
instance 0) and void are not segments and are marked in the ignore map. Segments are
taken from the strided grid `panoptic[::stride, ::stride]` (the loss resolution = the
model's output_stride: 4 by default, 2 for the Cityscapes configs), so every valid mask
has at least one pixel; they are ordered by increasing internal value. When there are
more than `max_segments`, the extra ones are dropped and their pixels ignored.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def strided_size(size: int, stride: int = 4) -> int:
  """Hs = (H - 1) // stride + 1, the length of `x[::stride]`."""
  return (size - 1) // stride + 1


def panoptic_targets(panoptic: tf.Tensor, num_classes: int, thing_train_ids: Sequence[int],
                     label_divisor: int, ignore_label: int, max_segments: int,
                     stride: int = 4, small_instance_area: int = 0,
                     small_instance_weight: float = 1.0) -> dict[str, tf.Tensor]:
  """panoptic int32 [H, W] -> the label dict entries (unbatched).

  `stride` is the label stride s (Hs = (H - 1) // s + 1).
  Returns semantic [H,W], masks [Hs,Ws,M], mask_classes [M], mask_valid [M],
  mask_is_thing [M], semantic_strided [Hs,Ws], ignore_strided [Hs,Ws],
  pixel_weights [Hs,Ws]. Thing-instance pixels whose (full resolution) area is below
  `small_instance_area` get weight `small_instance_weight` (0 disables the option).
  """
  if int(stride) < 1:
    raise ValueError(f"stride must be >= 1, got {stride}")
  panoptic = tf.convert_to_tensor(panoptic, tf.int32)
  d = label_divisor
  semantic = panoptic // d
  instance = panoptic % d
  lut_size = max(num_classes, ignore_label) + 1
  thing_lut = tf.constant([i in set(thing_train_ids) for i in range(lut_size)], tf.bool)
  real = semantic < num_classes
  is_thing = tf.gather(thing_lut, tf.clip_by_value(semantic, 0, lut_size - 1)) & real
  crowd = is_thing & tf.equal(instance, 0)
  ignore = tf.logical_not(real) | crowd
  semantic_out = tf.where(ignore, ignore_label, semantic)

  pan_s = panoptic[::stride, ::stride]
  ignore_s = ignore[::stride, ::stride]
  values = tf.sort(tf.unique(tf.boolean_mask(pan_s, tf.logical_not(ignore_s))).y)
  kept = values[:max_segments]
  num = tf.shape(kept)[0]
  slots = tf.concat([kept, -tf.ones([max_segments - num], tf.int32)], 0)
  slots = tf.ensure_shape(slots, [max_segments])
  masks = tf.equal(pan_s[..., None], slots[None, None, :])
  # Pixels of segments dropped beyond max_segments are ignored too.
  ignore_s = ignore_s | tf.logical_not(tf.reduce_any(masks, axis=-1))
  valid = tf.range(max_segments) < num
  classes = tf.where(valid, slots // d, num_classes)
  slot_is_thing = tf.gather(thing_lut, tf.clip_by_value(classes, 0, lut_size - 1)) & valid

  weights = 1.0 - tf.cast(ignore_s, tf.float32)
  if small_instance_area > 0 and small_instance_weight != 1.0:
    flat = tf.reshape(panoptic, [-1])
    _, idx, counts = tf.unique_with_counts(flat)
    area = tf.reshape(tf.gather(counts, idx), tf.shape(panoptic))[::stride, ::stride]
    small = (is_thing[::stride, ::stride] & tf.logical_not(ignore_s)
             & (area < small_instance_area))
    weights = tf.where(small, small_instance_weight, weights)

  return {
      "semantic": semantic_out,
      "masks": tf.cast(masks, tf.float32),
      "mask_classes": classes,
      "mask_valid": tf.cast(valid, tf.float32),
      "mask_is_thing": tf.cast(slot_is_thing, tf.float32),
      "semantic_strided": semantic_out[::stride, ::stride],
      "ignore_strided": tf.cast(ignore_s, tf.float32),
      "pixel_weights": weights,
  }
