"""Mask-wise merging with static shapes and dense ops only, for ONNX / LiteRT / OpenVINO.

`post_processing.MaskWiseMerger` is fast in TensorFlow because it is sparse: it
upsamples only undecided cells (`tf.where` / `boolean_mask`, ragged sizes), counts
areas and pairwise overlaps with `bincount` / scatter-adds, sorts masks with
`argsort`, and solves the sequential keep decisions with a `tf.while_loop` until a
fixed point. Those are dynamic-shape ops that converters reject or runtimes run badly.
This module computes the same result (the same rule, tested equal) with static shapes:

* every pixel is upsampled (`dense_upsampling`: the bits of
  `mask_upsampling.upsample_mask_logits`, element-wise, laid out by cell phase so the
  [H, W, N] logits are never interleaved; only the int32 maps are, at the end) and
  soft-maxed over masks; with pixel_confidence >= 1/3 a pixel lies in at most two
  binary masks;
* areas and pairwise overlaps are one matmul of the binary masks: G = Mᵀ M
  ([HW, N] 0/1 in float32, exact up to 2^24 pixels), area = diag(G);
* the score order is an N x N comparison (`before[j, k]`: j is ranked before k, ties
  by mask index as a stable descending sort), so nothing is gathered into sorted
  order: rank = column sums of `before`;
* the keep decisions keep_k = confident_k & (area_k - sum_j keep_j before_jk G_jk >
  overlap_threshold area_k) are iterated exactly N times, unrolled (iteration t
  settles the masks of rank < t, so N iterations reach the sequential answer);
* a kept mask's painted area is area_k - sum of its overlaps with earlier kept masks
  (a pixel has at most one other mask), so no second pass over the pixels;
* each pixel's owner is its kept mask of the smallest rank (a max over masks of
  binary·(N - rank)), and per-rank tables (an N x N one-hot of the ranks) give its
  values; segment lists are compacted through an N x N one-hot of the output slots.

Images smaller than the exported size: `image_size` [B, 2] marks the top-left region
of each image; pixels outside it cover no mask, grid points outside the covering grid
do not count toward mask scores (as `MaskWiseMerger(original_size=...)` crops), and
the maps there are void / ignore / 0.
"""

from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from deeplab2_kmax.app.export_formats.dense_upsampling import phase_coordinates
from deeplab2_kmax.app.export_formats.dense_upsampling import phases_to_pixels
from deeplab2_kmax.app.export_formats.dense_upsampling import upsample_phases
from deeplab2_kmax.core import output_keys


class DenseMaskWiseMerger:
  """`MaskWiseMerger`'s rule and outputs with static shapes (see the module docstring).

  Args:
    merger: the `post_processing.MaskWiseMerger` whose settings (thresholds,
      label_divisor, mask_stride, ...) this one follows.

  Call: `merger(outputs, image_size=None)`, outputs with "class_logits" [B, N, C+1]
  and "mask_logits" [B, Hs, Ws, N] (static Hs, Ws, N, C); image_size int32 [B, 2]
  (height, width <= s(Hs-1)+1, s(Ws-1)+1) or None (the full size). Returns the
  MaskWiseMerger keys at the full size s(Hs-1)+1 x s(Ws-1)+1.
  """

  def __init__(self, merger):
    self.config = merger.get_config()
    c = self.config
    if c["pixel_confidence"] < 1.0 / 3.0:
      raise ValueError("pixel_confidence must be >= 1/3 (at most two masks per pixel)")
    self.stride = int(c["mask_stride"])
    self.label_divisor = int(c["label_divisor"])
    self.ignore_label = int(c["ignore_label"])

  def _classify(self, class_logits):
    c = self.config
    num_classes = class_logits.shape[-1] - 1
    probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., :-1]
    cls = tf.argmax(probs, axis=-1, output_type=tf.int32)
    conf = tf.reduce_max(probs, axis=-1)
    lut = np.zeros([num_classes], np.bool_)
    lut[[int(t) for t in c["thing_train_ids"]]] = True
    is_thing = tf.gather(tf.constant(lut), cls)
    confident = tf.where(is_thing, conf >= c["thing_threshold"], conf >= c["stuff_threshold"])
    return cls, conf, is_thing, confident

  @staticmethod
  def _pow(x, weight):
    return x if weight == 1.0 else tf.pow(x, weight)

  def __call__(self, outputs: Dict[str, tf.Tensor],
               image_size: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    c = self.config
    s, conf_c = self.stride, float(c["pixel_confidence"])
    logits = tf.cast(outputs[output_keys.MASK_LOGITS], tf.float32)
    class_logits = outputs[output_keys.CLASS_LOGITS]
    _, hs, ws, n = logits.shape
    num_classes = class_logits.shape[-1] - 1
    if None in (hs, ws, n, num_classes):
      raise ValueError("DenseMaskWiseMerger needs static grid, mask and class sizes, got "
                       f"mask_logits {logits.shape}, class_logits {class_logits.shape}")
    if n >= self.label_divisor:
      raise ValueError(f"{n} masks need instance ids below label_divisor="
                       f"{self.label_divisor}")
    height, width = s * (hs - 1) + 1, s * (ws - 1) + 1
    batch = tf.shape(logits)[0]
    cls, conf, is_thing, confident = self._classify(class_logits)

    # Valid pixels and the grid points covering them (MaskWiseMerger's crop).
    if image_size is None:
      image_size = tf.tile(tf.constant([[height, width]], tf.int32), [batch, 1])
    image_size = tf.cast(image_size, tf.int32)
    grid_size = (image_size - 1 + s - 1) // s + 1

    def inside(size, h, w):  # [B, 2] -> bool [B, h, w]
      rows = tf.range(h)[None, :, None] < size[:, 0, None, None]
      cols = tf.range(w)[None, None, :] < size[:, 1, None, None]
      return tf.logical_and(rows, cols)

    grid_valid = tf.cast(inside(grid_size, hs, ws), tf.float32)[..., None]
    rows, cols = phase_coordinates(hs, ws, s)  # pixel row / column of every phase entry
    pixel_valid = tf.logical_and(rows[None] < image_size[:, 0, None, None, None],
                                 cols[None] < image_size[:, 1, None, None, None])

    # Ordering mask scores on the stride-s grid (mask_coverage.mask_scores).
    grid_probs = tf.nn.softmax(logits, axis=-1)
    grid_binary = tf.cast(grid_probs > conf_c, tf.float32) * grid_valid
    total = tf.reduce_sum(grid_probs * grid_binary, axis=[1, 2])
    count = tf.reduce_sum(grid_binary, axis=[1, 2])
    mask_score = tf.where(count > 0, total / tf.maximum(count, 1.0), 0.0)

    # Pixels (by phase, [B, s², Hs, Ws, ...]): binary masks, areas and overlaps.
    # Per-pixel ops on [pixels, N] matrices: LiteRT's softmax is 3x faster on 2-D
    # tensors than on the 5-D phase layout (same values).
    pixels = s * s * hs * ws
    up = tf.reshape(upsample_phases(logits, s), [-1, n])  # [B·pixels, N]
    probs = tf.reshape(tf.nn.softmax(up, axis=-1), [batch, pixels, n])
    binary = tf.logical_and(probs > conf_c, tf.reshape(pixel_valid, [batch, pixels, 1]))
    flat = tf.cast(binary, tf.float32)
    gram = tf.matmul(flat, flat, transpose_a=True)  # [B, N, N] = Mᵀ M
    eye = tf.constant(np.eye(n, dtype=np.float32))  # tf.eye is MatrixDiag: not in OpenVINO
    area = tf.reduce_sum(gram * eye, axis=1)
    overlap = gram * (1.0 - eye)

    # Score order: before[j, k] = mask j comes before mask k (stable, descending).
    order_score = (self._pow(conf, c["reorder_class_weight"])
                   * self._pow(mask_score, c["reorder_mask_weight"]))
    a, b = order_score[:, :, None], order_score[:, None, :]
    index_less = tf.constant(np.triu(np.ones([n, n], np.bool_), 1))  # j < k
    before = tf.logical_or(a > b, tf.logical_and(tf.equal(a, b), index_less))
    before_f = tf.cast(before, tf.float32)
    rank = tf.reduce_sum(tf.cast(before, tf.int32), axis=1)  # [B, N]

    # Sequential keep decisions, N unrolled fixed-point steps.
    earlier_overlap = overlap * before_f
    limit = area * c["overlap_threshold"]

    def taken_by(keep):
      return tf.matmul(tf.cast(keep, tf.float32)[:, None, :], earlier_overlap)[:, 0]

    keep = confident
    for _ in range(n):
      keep = tf.logical_and(confident, area - taken_by(keep) > limit)
    painted = tf.where(keep, area - taken_by(keep), 0.0)

    # deeplab2's area filters (stuff: all kept masks of the class together).
    same_class = tf.equal(cls[:, :, None], cls[:, None, :])
    stuff_kept = tf.logical_and(keep, tf.logical_not(is_thing))
    stuff_area = tf.reduce_sum(
        tf.cast(same_class, tf.float32) * tf.where(stuff_kept, painted, 0.0)[:, :, None],
        axis=1)
    final = tf.logical_and(keep, tf.where(is_thing, painted >= c["thing_area_limit"],
                                          stuff_area >= c["stuff_area_limit"]))
    void_value = self.ignore_label * self.label_divisor
    instance_value = tf.where(tf.logical_and(final, is_thing), rank + 1, 0)
    value = tf.where(final, cls * self.label_divisor + instance_value, void_value)

    # Owner of each pixel: its kept mask of the smallest rank; tables indexed by rank.
    by_rank = tf.equal(rank[:, :, None], tf.range(n)[None, None, :])  # [B, mask, rank]

    def rank_table(values, none_value):  # [B, N] per mask -> [B * (N + 1)] per rank
      table = tf.reduce_sum(tf.where(by_rank, values[:, :, None], 0), axis=1)
      return tf.reshape(tf.concat([table, tf.fill([batch, 1], none_value)], 1), [-1])

    # The smallest kept rank r among a pixel's masks is n - max over masks of
    # binary·(n - r) (0 where none): a float multiply and max instead of an int select
    # (tf2onnx lowers that to several arithmetic passes over [HW, N]).
    weight = tf.cast(n - tf.where(keep, rank, n), tf.float32)[:, None, :]
    owner = n - tf.cast(tf.reduce_max(flat * weight, axis=-1), tf.int32)  # n: none
    owner = tf.reshape(owner, [batch, s * s, hs, ws]) + (
        tf.range(batch) * (n + 1))[:, None, None, None]

    def to_pixels(phases):  # [B, s², Hs, Ws] -> [B, H, W]
      return phases_to_pixels(phases, s)[:, :height, :width]

    panoptic = to_pixels(tf.gather(rank_table(value, void_value), owner))
    instance = to_pixels(tf.gather(rank_table(instance_value, 0), owner))
    if c["pixelwise_semantic"]:
      argmax = tf.reshape(tf.argmax(up, axis=-1, output_type=tf.int32),
                          [batch, s * s, hs, ws]) + (tf.range(batch) * n)[:, None, None, None]
      semantic = to_pixels(tf.where(pixel_valid, tf.gather(tf.reshape(cls, [-1]), argmax),
                                    self.ignore_label))
    else:
      semantic = tf.where(tf.equal(panoptic, void_value), self.ignore_label,
                          panoptic // self.label_divisor)

    # Segment list in score order: kept things, the first kept mask of a stuff class.
    stuff_final = tf.logical_and(final, tf.logical_not(is_thing))
    earlier_same_stuff = tf.logical_and(tf.logical_and(same_class, before),
                                        stuff_final[:, :, None])
    first_stuff = tf.logical_not(tf.reduce_any(earlier_same_stuff, axis=1))
    is_segment = tf.logical_and(final, tf.logical_or(is_thing, first_stuff))
    slot = tf.reduce_sum(tf.cast(tf.logical_and(before, is_segment[:, :, None]),
                                 tf.int32), axis=1)
    to_slot = tf.logical_and(tf.equal(slot[:, :, None], tf.range(n)[None, None, :]),
                             is_segment[:, :, None])  # [B, mask, slot]
    num_segments = tf.reduce_sum(tf.cast(is_segment, tf.int32), axis=1)
    valid_slot = tf.range(n)[None, :] < num_segments[:, None]

    def compact(values, fill):
      zero = tf.zeros([], values.dtype)
      packed = tf.reduce_sum(tf.where(to_slot, values[:, :, None], zero), axis=1)
      return tf.where(valid_slot, packed, tf.cast(fill, values.dtype))

    segment_area = tf.cast(tf.where(is_thing, painted, stuff_area), tf.int32)
    return {
        "panoptic": panoptic,
        "semantic": semantic,
        "instance": instance,
        "segment_ids": compact(value, -1),
        "segment_classes": compact(cls, -1),
        "segment_scores": compact(order_score, 0.0),
        "segment_areas": compact(segment_area, 0),
        "segment_is_thing": tf.logical_and(
            valid_slot, compact(tf.cast(is_thing, tf.int32), 0) > 0),
        "num_segments": num_segments,
    }
