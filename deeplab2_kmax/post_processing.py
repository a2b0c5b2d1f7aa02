"""Vectorized mask-wise merging (docs/PAPER.md §4; deeplab2's max_deeplab post-processor).

deeplab2 pastes the N binary masks onto a canvas one by one (a loop doing O(H·W) work per
mask). We compute exactly the same result with O(H·W) work done once:

* binary mask n = {pixels whose softmax-over-masks probability > pixel_confidence}.
  With pixel_confidence >= 1/3 a pixel lies in at most two binary masks, found from the
  stride-s grid with exact per-cell bounds, upsampling only undecided cells
  (`mask_coverage`, `mask_upsampling`; s = `mask_stride`, the model's output_stride:
  4, or 2 for the five-stage Cityscapes decoders).
* mask n's not-yet-painted area when it is reached is |m_n| - sum over earlier kept masks
  j of |m_n ∩ m_j| (no pixel of m_n is counted twice: it has at most one other mask). So
  the sequential keep decisions only need the N x N pairwise-overlap matrix, built with
  one scatter-add over the pixels covered by two masks. The decisions keep_k =
  confident_k & (area_k - sum_{j<k} keep_j O_jk > overlap·area_k) are solved by a
  fixed-point iteration on N-vectors (iteration i fixes the first i masks, and the
  unique fixed point is the sequential answer); it usually stops after a few steps.
* each pixel belongs to the first kept mask (in score order) among its <= 2 masks.
* the ordering score class_prob × mask_score uses mask scores from the stride-s grid, as
  deeplab2's kMaX does (it passes its stride-s logits to the post-processor).
* area filters as deeplab2: thing segments by their painted area, stuff by the painted
  area of all segments of the class (stuff masks of one class merge into one segment).

Output encoding (docs/DESIGN.md): panoptic = semantic·label_divisor + instance; thing
instance = 1 + the mask's position in the score order (deeplab2 numbering), stuff 0,
unassigned pixels ignore_label·label_divisor.
"""

from typing import Dict, Optional, Sequence

import gin
import tensorflow as tf

from deeplab2_kmax import mask_coverage
from deeplab2_kmax.core import output_keys
from deeplab2_kmax.mask_upsampling import check_stride
from deeplab2_kmax.mask_upsampling import crop_grid
# upsample_mask_logits is also re-exported for callers of this module.
from deeplab2_kmax.mask_upsampling import upsample_mask_logits  # pylint: disable=unused-import


def _scatter_add(values, segment_ids, num_segments):
  return tf.math.unsorted_segment_sum(values, segment_ids, num_segments)


def _count(ids, num_ids, xla_compatible):
  """float32 histogram of int32 ids in [0, num_ids): bincount, ~10x faster than a
  segment sum of ones over a 641x641 map (exact up to 2^24 per bin); XLA needs a
  compile-time num_ids for bincount, so the xla_compatible variant keeps the sum."""
  if xla_compatible:
    return _scatter_add(tf.ones_like(ids, tf.float32), ids, num_ids)
  return tf.math.bincount(tf.reshape(ids, [-1]), minlength=num_ids, maxlength=num_ids,
                          dtype=tf.float32)


@gin.configurable
class MaskWiseMerger:
  """Model outputs -> panoptic maps + per-segment info, all masks at once.

  Call: `merger(outputs, output_size, original_size=None)`
    outputs: dict with "class_logits" [B, N, C+1] (void last) and "mask_logits"
      [B, Hs, Ws, N] (stride s = mask_stride).
    output_size: (H, W) the mask logits are upsampled to (the padded input size,
      s(Hs-1)+1 for sk+1 inputs; checked).
    original_size: optional (h, w) <= (H, W): the maps are cropped to it BEFORE merging,
      so padding never counts toward mask scores or areas.
  Returns a dict: "panoptic", "instance" int32 [B, h, w]; "semantic" int32 [B, h, w]:
  as deeplab2, the threshold-free semantic prediction (class of the per-pixel argmax
  mask; `pixelwise_semantic=False`: panoptic // label_divisor, void where unassigned);
  "segment_ids",
  "segment_classes" int32 [B, N] (panoptic value and train id of each segment, -1 after
  num_segments); "segment_scores" float32 [B, N] (class prob × mask score of the
  segment's first mask); "segment_areas" int32 [B, N]; "segment_is_thing" bool [B, N];
  "num_segments" int32 [B]. Segments are listed in score order.

  mask_stride: the stride s of mask_logits, a power of two: the model's output_stride
    (4; 2 for the five-stage Cityscapes decoders on ResNet / MaX-S backbones). Every
    caller passes `model.output_stride`.
  xla_compatible: upsample every pixel with static shapes (for jit_compile=True)
  instead of only the boundary cells (see `pixel_masks`); same results.
  """

  def __init__(self, thing_train_ids: Sequence[int], label_divisor: int,
               ignore_label: int, thing_threshold: float = 0.7,
               stuff_threshold: float = 0.5, pixel_confidence: float = 0.4,
               overlap_threshold: float = 0.8, thing_area_limit: int = 400,
               stuff_area_limit: int = 6400, reorder_class_weight: float = 1.0,
               reorder_mask_weight: float = 1.0, xla_compatible: bool = False,
               pixelwise_semantic: bool = True, mask_stride: int = 4):
    if pixel_confidence < 1.0 / 3.0:
      raise ValueError(f"pixel_confidence={pixel_confidence}: the vectorized merge needs "
                       ">= 1/3 (at most two masks per pixel); deeplab2 configs use 0.4")
    self.thing_train_ids = [int(t) for t in thing_train_ids]
    self.label_divisor = int(label_divisor)
    self.ignore_label = int(ignore_label)
    self.thing_threshold = float(thing_threshold)
    self.stuff_threshold = float(stuff_threshold)
    self.pixel_confidence = float(pixel_confidence)
    self.overlap_threshold = float(overlap_threshold)
    self.thing_area_limit = int(thing_area_limit)
    self.stuff_area_limit = int(stuff_area_limit)
    self.reorder_class_weight = float(reorder_class_weight)
    self.reorder_mask_weight = float(reorder_mask_weight)
    self.xla_compatible = bool(xla_compatible)
    self.pixelwise_semantic = bool(pixelwise_semantic)
    self.mask_stride = check_stride(mask_stride)

  def get_config(self) -> Dict:
    return dict(thing_train_ids=self.thing_train_ids, label_divisor=self.label_divisor,
                ignore_label=self.ignore_label, thing_threshold=self.thing_threshold,
                stuff_threshold=self.stuff_threshold,
                pixel_confidence=self.pixel_confidence,
                overlap_threshold=self.overlap_threshold,
                thing_area_limit=self.thing_area_limit,
                stuff_area_limit=self.stuff_area_limit,
                reorder_class_weight=self.reorder_class_weight,
                reorder_mask_weight=self.reorder_mask_weight,
                xla_compatible=self.xla_compatible,
                pixelwise_semantic=self.pixelwise_semantic,
                mask_stride=self.mask_stride)

  # ------------------------------------------------------------------ mask classes
  def classify(self, class_logits: tf.Tensor):
    """-> (class [B, N] int32, class prob [B, N], is_thing [B, N], confident [B, N])."""
    num_classes = class_logits.shape[-1] - 1
    probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., :-1]
    cls = tf.argmax(probs, axis=-1, output_type=tf.int32)
    conf = tf.reduce_max(probs, axis=-1)
    thing_lut = tf.scatter_nd(
        tf.constant([[t] for t in self.thing_train_ids], tf.int32, shape=[
            len(self.thing_train_ids), 1]),
        tf.ones([len(self.thing_train_ids)], tf.bool), [num_classes])
    is_thing = tf.gather(thing_lut, cls)
    confident = tf.where(is_thing, conf >= self.thing_threshold,
                         conf >= self.stuff_threshold)
    return cls, conf, is_thing, confident

  # ------------------------------------------------------------------ pixels
  def pixel_masks(self, logits: tf.Tensor, crop_h, crop_w):
    """`mask_coverage.pixel_masks` with this merger's settings."""
    return mask_coverage.pixel_masks(
        logits, crop_h, crop_w, self.pixel_confidence, stride=self.mask_stride,
        xla_compatible=self.xla_compatible, pixelwise_semantic=self.pixelwise_semantic)

  def mask_scores(self, logits: tf.Tensor) -> tf.Tensor:
    """[B, N] ordering mask scores on the stride-s grid (`mask_coverage.mask_scores`)."""
    return mask_coverage.mask_scores(logits, self.pixel_confidence)

  # ------------------------------------------------------------------ main
  def __call__(self, outputs: Dict[str, tf.Tensor], output_size=None,
               original_size: Optional[Sequence] = None) -> Dict[str, tf.Tensor]:
    class_logits = outputs[output_keys.CLASS_LOGITS]
    mask_logits = tf.cast(outputs[output_keys.MASK_LOGITS], tf.float32)
    num_masks = mask_logits.shape[-1]
    num_classes = class_logits.shape[-1] - 1
    if num_masks is None or num_classes is None:
      raise ValueError("the number of masks and classes must be static")
    if num_masks >= self.label_divisor:
      raise ValueError(f"{num_masks} masks need instance ids up to {num_masks}, which "
                       f"must stay below label_divisor={self.label_divisor}")
    cls, conf, is_thing, confident = self.classify(class_logits)
    logits, crop_h, crop_w = crop_grid(mask_logits, output_size, original_size,
                                       self.mask_stride)
    code, where2, cov2, i2, mask_score, argmax = self.pixel_masks(logits, crop_h, crop_w)
    batch = tf.shape(code)[0]
    n = num_masks
    # Per-pixel ids b·(N+1) + code (N = no mask): one flat gather/bincount per pass.
    offsets = tf.range(batch, dtype=tf.int32)[:, None, None] * (n + 1)
    code_id = code + offsets
    # Where cov2, also p1 > c, so code is a mask (< N); the clamp covers the other
    # pixels of the dense xla_compatible variant (weight 0 anyway).
    i1_at = tf.minimum(tf.gather_nd(code, where2), n - 1)
    b2 = tf.cast(where2[:, 0], tf.int32)
    seg2 = i2 + b2 * n
    cov2_f = tf.cast(cov2, tf.float32)
    count1 = _count(code_id, batch * (n + 1), self.xla_compatible)
    area = (tf.reshape(count1, [batch, n + 1])[:, :n]
            + tf.reshape(_scatter_add(cov2_f, seg2, batch * n), [batch, n]))
    # Pairwise overlaps: pixels covered by two masks.
    pair_id = b2 * n * n + i1_at * n + i2
    overlap = tf.reshape(_scatter_add(cov2_f, pair_id, batch * n * n), [batch, n, n])
    overlap = overlap + tf.transpose(overlap, [0, 2, 1])

    # Score order (stable, descending) as deeplab2.
    order_score = (tf.pow(conf, self.reorder_class_weight)
                   * tf.pow(mask_score, self.reorder_mask_weight))
    order = tf.argsort(order_score, axis=-1, direction="DESCENDING", stable=True)
    rank = tf.argsort(order, axis=-1, stable=True)  # position of each mask
    area_s = tf.gather(area, order, batch_dims=1)
    conf_ok_s = tf.gather(confident, order, batch_dims=1)
    overlap_s = tf.gather(tf.gather(overlap, order, axis=1, batch_dims=1), order, axis=2,
                          batch_dims=1)
    earlier = tf.linalg.band_part(tf.ones([n, n]), 0, -1) - tf.eye(n)  # j < k
    overlap_s = overlap_s * earlier
    limit = area_s * self.overlap_threshold

    def step(keep):
      taken = tf.einsum("bj,bjk->bk", tf.cast(keep, tf.float32), overlap_s)
      return conf_ok_s & (area_s - taken > limit)

    def body(i, keep, _):
      new = tf.ensure_shape(step(keep), keep.shape)
      return i + 1, new, tf.reduce_any(tf.not_equal(new, keep))

    _, keep_s, _ = tf.while_loop(lambda i, k, changed: changed & (i <= n), body,
                                 (tf.constant(0), conf_ok_s, tf.constant(True)))
    keep = tf.gather(keep_s, rank, batch_dims=1)  # back to mask order

    # Owner of each pixel: the earliest kept mask among its (<= 2) covering masks.
    kept_rank = tf.concat([tf.where(keep, rank, n), tf.fill([batch, 1], n)], axis=1)
    owner_rank = tf.gather(tf.reshape(kept_rank, [-1]), code_id)  # n = none
    rank2 = tf.where(cov2 & tf.gather_nd(keep, tf.stack([b2, i2], -1)),
                     tf.gather_nd(rank, tf.stack([b2, i2], -1)), n)
    owner_rank = tf.tensor_scatter_nd_min(owner_rank, where2, rank2)
    # Painted areas per mask (in rank space), then deeplab2's area filters.
    owner_id = owner_rank + offsets
    painted_s = tf.reshape(_count(owner_id, batch * (n + 1), self.xla_compatible),
                           [batch, n + 1])[:, :n]
    cls_s = tf.gather(cls, order, batch_dims=1)
    thing_s = tf.gather(is_thing, order, batch_dims=1)
    stuff_kept = keep_s & ~thing_s
    class_id = cls_s + tf.range(batch, dtype=tf.int32)[:, None] * num_classes
    class_area = tf.reshape(
        _scatter_add(tf.where(stuff_kept, painted_s, 0.0), class_id, batch * num_classes),
        [batch, num_classes])
    stuff_area_s = tf.gather(class_area, cls_s, batch_dims=1)
    final_s = keep_s & tf.where(thing_s, painted_s >= self.thing_area_limit,
                                stuff_area_s >= self.stuff_area_limit)

    ranks = tf.range(n, dtype=tf.int32)[None, :]
    void_value = self.ignore_label * self.label_divisor
    value_s = cls_s * self.label_divisor + tf.where(thing_s, ranks + 1, 0)
    value_s = tf.where(final_s, value_s, void_value)

    def paint(per_rank, none_value):  # [B, N] per rank -> [B, h, w] per pixel owner
      table = tf.concat([per_rank, tf.fill([batch, 1], none_value)], axis=1)
      return tf.gather(tf.reshape(table, [-1]), owner_id)

    panoptic = paint(value_s, void_value)
    if self.pixelwise_semantic:
      semantic = tf.gather(tf.reshape(cls, [-1]),
                           argmax + tf.range(batch)[:, None, None] * n)
    else:
      semantic = paint(value_s // self.label_divisor, self.ignore_label)
    instance = paint(value_s % self.label_divisor, 0)

    # Segment list: kept things, and the first kept mask of each stuff class.
    first_rank = tf.math.unsorted_segment_min(
        tf.where(final_s & ~thing_s, tf.broadcast_to(ranks, tf.shape(cls_s)), n),
        class_id, batch * num_classes)
    first_rank = tf.gather(tf.reshape(first_rank, [batch, num_classes]), cls_s,
                           batch_dims=1)
    is_segment = final_s & (thing_s | tf.equal(first_rank, ranks))
    seg_area = tf.where(thing_s, painted_s, stuff_area_s)
    slot = tf.cumsum(tf.cast(is_segment, tf.int32), axis=1, exclusive=True)
    slot = tf.where(is_segment, slot, n)  # dropped entries go to a spill slot
    idx = tf.stack([tf.broadcast_to(tf.range(batch)[:, None], tf.shape(slot)), slot], -1)

    def compact(values, fill):
      base = tf.fill([batch, n + 1], tf.cast(fill, values.dtype))
      return tf.tensor_scatter_nd_update(base, idx, values)[:, :n]

    scores_s = tf.gather(order_score, order, batch_dims=1)
    num_segments = tf.reduce_sum(tf.cast(is_segment, tf.int32), axis=1)
    valid = ranks < num_segments[:, None]
    return {
        "panoptic": panoptic,
        "semantic": semantic,
        "instance": instance,
        "segment_ids": tf.where(valid, compact(value_s, -1), -1),
        "segment_classes": tf.where(valid, compact(cls_s, -1), -1),
        "segment_scores": tf.where(valid, compact(scores_s, 0.0), 0.0),
        "segment_areas": tf.where(valid, compact(tf.cast(seg_area, tf.int32), 0), 0),
        "segment_is_thing": valid & compact(thing_s, False),
        "num_segments": num_segments,
    }


def check_merger_stride(model, merger) -> None:
  """Raises ValueError unless the merger's mask_stride is the model's output_stride
  (checked where both are known: a KMaXDeepLab and a MaskWiseMerger)."""
  model_stride = getattr(model, "output_stride", None)
  merger_stride = getattr(merger, "mask_stride", None)
  if model_stride is not None and merger_stride is not None and (
      int(model_stride) != int(merger_stride)):
    raise ValueError(
        f"the merger's mask_stride={merger_stride} differs from the model's "
        f"output_stride={model_stride} (the stride of its mask logits): build the merger "
        "with MaskWiseMerger(..., mask_stride=model.output_stride)")
