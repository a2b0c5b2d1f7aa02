"""Vectorized mask-wise merging (KMAX.md §4; deeplab2 `post_processor/max_deeplab.py`).

deeplab2 pastes the N binary masks onto a canvas one by one (a loop doing O(H·W) work per
mask). We compute exactly the same result with O(H·W) work done once:

* binary mask n = {pixels whose softmax-over-masks probability > pixel_confidence}. With
  pixel_confidence >= 1/3 a pixel lies in at most two binary masks (three probabilities
  > 1/3 cannot sum to 1), so the top-2 probabilities of each pixel describe all masks;
  the second one can only pass where c < p1 < 1 - c, a thin set of boundary pixels that
  is gathered sparsely. Dense work happens on the stride-4 grid (a softmax, a 2x2
  max-pool, a few reductions over masks); at full resolution only int32 maps are
  touched (one flat gather per output map, two bincounts). Upsampled logits are
  computed only for the cells and masks that need them, with an arithmetic that gives
  the same bits on any subset (`mask_upsampling`).
* mask n's not-yet-painted area when it is reached is |m_n| - sum over earlier kept masks
  j of |m_n ∩ m_j| (no pixel of m_n is counted twice: it has at most one other mask). So
  the sequential keep decisions only need the N x N pairwise-overlap matrix, built with
  one scatter-add over the pixels covered by two masks. The decisions keep_k =
  confident_k & (area_k - sum_{j<k} keep_j O_jk > overlap·area_k) are solved by a
  fixed-point iteration on N-vectors (iteration i fixes the first i masks, and the
  unique fixed point is the sequential answer); it usually stops after a few steps.
* each pixel belongs to the first kept mask (in score order) among its <= 2 masks.
* the ordering score class_prob × mask_score uses mask scores from the stride-4 grid, as
  deeplab2's kMaX does (it passes stride-4 logits to the post-processor).
* area filters as deeplab2: thing segments by their painted area, stuff by the painted
  area of all segments of the class (stuff masks of one class merge into one segment).

Output encoding (docs/DESIGN.md): panoptic = semantic·label_divisor + instance; thing
instance = 1 + the mask's position in the score order (deeplab2 numbering), stuff 0,
unassigned pixels ignore_label·label_divisor.
"""

import math
from typing import Dict, Optional, Sequence

import gin
import tensorflow as tf

from deeplab2_kmax.mask_upsampling import all_cell_corners
from deeplab2_kmax.mask_upsampling import cell_argmax
from deeplab2_kmax.mask_upsampling import cells_to_pixels
from deeplab2_kmax.mask_upsampling import crop_grid
from deeplab2_kmax.mask_upsampling import gather_cell_corners
from deeplab2_kmax.mask_upsampling import interpolate_cells
from deeplab2_kmax.mask_upsampling import pad_grid
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
      [B, Hs, Ws, N] (stride 4).
    output_size: (H, W) the mask logits are upsampled to (the padded input size,
      4(Hs-1)+1 for 4k+1 inputs).
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

  xla_compatible: upsample every pixel with static shapes (for jit_compile=True)
  instead of only the boundary cells (see `pixel_masks`); same results.
  """

  def __init__(self, thing_train_ids: Sequence[int], label_divisor: int,
               ignore_label: int, thing_threshold: float = 0.7,
               stuff_threshold: float = 0.5, pixel_confidence: float = 0.4,
               overlap_threshold: float = 0.8, thing_area_limit: int = 400,
               stuff_area_limit: int = 6400, reorder_class_weight: float = 1.0,
               reorder_mask_weight: float = 1.0, xla_compatible: bool = False,
               pixelwise_semantic: bool = True):
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
                pixelwise_semantic=self.pixelwise_semantic)

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
    """Which masks cover each pixel (prob > pixel_confidence; at most two), from the
    (cropped) stride-4 logits, plus the ordering mask scores and the argmax map.

    Returns (code, where2, cov2, i2, mask_score, argmax):
      code int32 [B, h, w]: the best mask of the pixel if it covers it, else N;
      where2 int64 [P, 3] (b, y, x), cov2 bool [P], i2 int32 [P]: sparsely, the pixels
        whose second-best mask may cover them (all pixels under xla_compatible);
      mask_score [B, N] (see `mask_scores`); argmax int32 [B, h, w], the per-pixel
        argmax over all masks (None unless pixelwise_semantic).

    Cell shortcut (exact): inside a stride-4 cell the logits are a convex combination
    of the 4 corner logits, so if all corners share the argmax m and each corner has
    p(m) > max(c, 1 - c), then every pixel of the cell has argmax m with p(m) >= the
    smallest corner p(m) (Jensen on the softmax denominator) and no second mask can
    exceed c; bounds on the largest probability also prove cells empty (a cheap one on
    every cell, then an exact one on the rest). Only the remaining ("boundary") cells
    are upsampled and soft-maxed, 16 pixels per cell. The argmax map comes from
    `cell_argmax` (candidate masks only). `xla_compatible=True` upsamples everything
    instead (static shapes).
    """
    n = logits.shape[-1]
    c_lo = self.pixel_confidence
    c_hi = max(c_lo, 1.0 - c_lo) + 1e-4  # margin over float rounding
    if self.xla_compatible:
      up = upsample_mask_logits(logits)[:, :crop_h, :crop_w]
      top_p, top_i = tf.math.top_k(tf.nn.softmax(up, axis=-1), k=2)
      size = tf.shape(top_p, out_type=tf.int64)
      coords = tf.meshgrid(tf.range(size[0]), tf.range(size[1]), tf.range(size[2]),
                           indexing="ij")
      argmax = (tf.argmax(up, axis=-1, output_type=tf.int32) if self.pixelwise_semantic
                else None)
      return (tf.where(top_p[..., 0] > c_lo, top_i[..., 0], n),
              tf.reshape(tf.stack(coords, axis=-1), [-1, 3]),
              tf.reshape(top_p[..., 1], [-1]) > c_lo, tf.reshape(top_i[..., 1], [-1]),
              self.mask_scores(logits), argmax)

    grid = pad_grid(logits)
    ig = tf.argmax(grid, axis=-1, output_type=tf.int32)
    argmax_cells = cell_argmax(grid, ig) if self.pixelwise_semantic else None
    probs = tf.nn.softmax(grid, axis=-1)
    p1g = tf.reduce_max(probs, axis=-1)

    def cell_min(x):  # [B, gh+1, gw+1] grid values -> [B, gh, gw, 4] -> min / max
      return tf.reduce_min(all_cell_corners(x[..., None])[..., 0], axis=-1)

    def cell_max(x):
      return tf.reduce_max(all_cell_corners(x[..., None])[..., 0], axis=-1)

    corner_ig = all_cell_corners(ig[..., None])[..., 0]  # [B, gh, gw, 4]
    same = tf.reduce_all(tf.equal(corner_ig, corner_ig[..., :1]), axis=-1)
    clean = same & (cell_min(p1g) > c_hi)  # [B, gh, gw]
    # Empty cells, first by a cheap dense bound: log p_n(x) <= max_c max_m L_cm -
    # logsumexp_m l_m(x) and logsumexp_m l_m(x) >= log N + mean_m l_m(x) (Jensen), a
    # bilinear function >= min_c mean_m L_cm. The margin covers the rounding of the
    # mean and of the interpolation (~1e-6 of the largest |logit|). It proves all cells
    # of unconfident / randomly initialized models empty.
    c_max, c_min = cell_max(tf.reduce_max(grid, -1)), cell_min(tf.reduce_min(grid, -1))
    jensen = (c_max - math.log(n) - cell_min(tf.reduce_mean(grid, -1))
              + 2e-5 * tf.maximum(tf.abs(c_max), tf.abs(c_min)))
    maybe = tf.where(~clean & (jensen >= math.log(c_lo) - 1e-4))
    # Then exactly on the remaining cells' corners: l_n(x) - l_m(x) >= min_c L_cn -
    # max_c L_cm, so every probability in the cell is <= exp(max_m max_c L_cm -
    # logsumexp_n min_c L_cn); below c no pixel of the cell is covered.
    corners = gather_cell_corners(grid, *(tf.cast(maybe[:, k], tf.int32) for k in range(3)))
    bound = (tf.reduce_max(corners, axis=[1, 2])
             - tf.reduce_logsumexp(tf.reduce_min(corners, axis=1), axis=-1))
    nonempty = bound >= math.log(c_lo) - 1e-4
    dirty = tf.boolean_mask(maybe, nonempty)  # [Pc, 3]
    db, di, dj = (tf.cast(dirty[:, k], tf.int32) for k in range(3))
    pp = tf.nn.softmax(interpolate_cells(tf.boolean_mask(corners, nonempty)), axis=-1)
    p1d = tf.reduce_max(pp, axis=-1)  # [Pc, 16, N] -> [Pc, 16]
    i1d = tf.argmax(pp, axis=-1, output_type=tf.int32)

    code = tf.where(clean[..., None], corner_ig[..., :1], n)
    code = tf.broadcast_to(code, tf.concat([tf.shape(clean), [16]], 0))
    code = tf.tensor_scatter_nd_update(code, dirty, tf.where(p1d > c_lo, i1d, n))
    code = cells_to_pixels(code)[:, :crop_h, :crop_w]

    sel = tf.where((p1d > c_lo) & (p1d < c_hi))  # [Q, 2] (dirty cell, pixel in cell)
    cell = sel[:, 0]
    k = tf.cast(sel[:, 1], tf.int32)
    y = tf.gather(di, cell) * 4 + k // 4
    x = tf.gather(dj, cell) * 4 + k % 4
    inside = (y < crop_h) & (x < crop_w)
    cov2, i2 = self._second(tf.gather_nd(pp, tf.boolean_mask(sel, inside)),
                            tf.boolean_mask(tf.gather_nd(i1d, sel), inside))
    where2 = tf.cast(tf.stack([tf.boolean_mask(tf.gather(db, cell), inside),
                               tf.boolean_mask(y, inside), tf.boolean_mask(x, inside)],
                              axis=-1), tf.int64)
    argmax = (None if argmax_cells is None
              else cells_to_pixels(argmax_cells)[:, :crop_h, :crop_w])
    score = self._sparse_mask_scores(probs, p1g[:, :-1, :-1], ig[:, :-1, :-1])
    return code, where2, cov2, i2, score, argmax

  def _second(self, probs: tf.Tensor, first: tf.Tensor):
    """[P, N] probabilities and [P] best mask -> (second best covers, its index)."""
    second = tf.where(tf.one_hot(first, probs.shape[-1], on_value=True, off_value=False),
                      -1.0, probs)
    return (tf.reduce_max(second, axis=-1) > self.pixel_confidence,
            tf.argmax(second, axis=-1, output_type=tf.int32))

  def _sparse_mask_scores(self, probs, p1, i1) -> tf.Tensor:
    """`mask_scores` from the grid softmax probs [B, >= Hs, >= Ws, N] (padded is fine)
    and the max p1 and argmax i1 [B, Hs, Ws] of its points covering the image: a point
    adds to at most two masks (pixel_confidence >= 1/3): its best one where p1 > c,
    its second one only where p1 < 1 - c (gathered sparsely). So segment sums over the
    grid points replace the dense [B, Hs, Ws, N] reductions of `mask_scores`."""
    c_lo = self.pixel_confidence
    n = probs.shape[-1]
    batch = tf.shape(p1)[0]
    ids = i1 + tf.range(batch)[:, None, None] * n
    cov1 = tf.cast(p1 > c_lo, tf.float32)
    where2 = tf.where((p1 > c_lo) & (p1 < max(c_lo, 1.0 - c_lo) + 1e-4))
    cov2, i2 = self._second(tf.gather_nd(probs, where2), tf.gather_nd(i1, where2))
    b2 = tf.cast(where2[:, 0], tf.int32)
    p2 = tf.gather_nd(probs, tf.concat([where2, tf.cast(i2, tf.int64)[:, None]], -1))
    cov2 = tf.cast(cov2, tf.float32)
    ids2 = i2 + b2 * n
    total = (_scatter_add(p1 * cov1, ids, batch * n)
             + _scatter_add(p2 * cov2, ids2, batch * n))
    count = _scatter_add(cov1, ids, batch * n) + _scatter_add(cov2, ids2, batch * n)
    return tf.reshape(tf.math.divide_no_nan(total, count), [batch, n])

  def mask_scores(self, logits: tf.Tensor) -> tf.Tensor:
    """[B, N] mean probability inside each binary mask, on the stride-4 grid points
    covering the original image (`crop_grid`).

    deeplab2's kMaX hands the post-processor stride-4 logits and computes these
    ordering scores before upsampling (only painting and areas use full resolution).
    """
    probs = tf.nn.softmax(logits, axis=-1)
    binary = tf.cast(probs > self.pixel_confidence, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(probs * binary, axis=[1, 2]),
                                 tf.reduce_sum(binary, axis=[1, 2]))

  # ------------------------------------------------------------------ main
  def __call__(self, outputs: Dict[str, tf.Tensor], output_size=None,
               original_size: Optional[Sequence] = None) -> Dict[str, tf.Tensor]:
    class_logits = outputs["class_logits"]
    mask_logits = tf.cast(outputs["mask_logits"], tf.float32)
    num_masks = mask_logits.shape[-1]
    num_classes = class_logits.shape[-1] - 1
    if num_masks is None or num_classes is None:
      raise ValueError("the number of masks and classes must be static")
    if num_masks >= self.label_divisor:
      raise ValueError(f"{num_masks} masks need instance ids up to {num_masks}, which "
                       f"must stay below label_divisor={self.label_divisor}")
    cls, conf, is_thing, confident = self.classify(class_logits)
    logits, crop_h, crop_w = crop_grid(mask_logits, output_size, original_size)
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
