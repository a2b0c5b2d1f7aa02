"""Which masks cover each pixel, and the ordering mask scores, from stride-s mask logits
(the per-pixel half of `post_processing.MaskWiseMerger`).

Binary mask n = {pixels whose softmax-over-masks probability > c = pixel_confidence},
on the align-corners upsampling of the logits (`mask_upsampling`, stride s = the
model's output_stride: 4, or 2 for the five-stage Cityscapes decoders). With c >= 1/3 a
pixel lies in at most two binary masks (three probabilities > 1/3 cannot sum to 1), so
the top-2 probabilities of each pixel describe all masks; the second one can only pass
where c < p1 < 1 - c, a thin set of boundary pixels that is gathered sparsely. Dense
work happens on the stride-s grid (a softmax, a 2x2 max-pool, a few reductions over
masks); at full resolution only int32 maps are touched. Upsampled logits are computed
only for the cells and masks that need them, with an arithmetic that gives the same
bits on any subset.
"""

import math

import tensorflow as tf

from deeplab2_kmax.mask_upsampling import all_cell_corners
from deeplab2_kmax.mask_upsampling import cell_argmax
from deeplab2_kmax.mask_upsampling import cells_to_pixels
from deeplab2_kmax.mask_upsampling import check_stride
from deeplab2_kmax.mask_upsampling import gather_cell_corners
from deeplab2_kmax.mask_upsampling import interpolate_cells
from deeplab2_kmax.mask_upsampling import pad_grid
from deeplab2_kmax.mask_upsampling import upsample_mask_logits


def _scatter_add(values, segment_ids, num_segments):
  return tf.math.unsorted_segment_sum(values, segment_ids, num_segments)


def second_best(probs: tf.Tensor, first: tf.Tensor, pixel_confidence: float):
  """[P, N] probabilities and [P] best mask -> (second best covers, its index)."""
  second = tf.where(tf.one_hot(first, probs.shape[-1], on_value=True, off_value=False),
                    -1.0, probs)
  return (tf.reduce_max(second, axis=-1) > pixel_confidence,
          tf.argmax(second, axis=-1, output_type=tf.int32))


def mask_scores(logits: tf.Tensor, pixel_confidence: float) -> tf.Tensor:
  """[B, N] mean probability inside each binary mask, on the stride-s grid points
  covering the original image (`crop_grid`).

  deeplab2's kMaX hands the post-processor the stride-s logits and computes these
  ordering scores before upsampling (only painting and areas use full resolution).
  """
  probs = tf.nn.softmax(logits, axis=-1)
  binary = tf.cast(probs > pixel_confidence, tf.float32)
  return tf.math.divide_no_nan(tf.reduce_sum(probs * binary, axis=[1, 2]),
                               tf.reduce_sum(binary, axis=[1, 2]))


def sparse_mask_scores(probs, p1, i1, pixel_confidence: float) -> tf.Tensor:
  """`mask_scores` from the grid softmax probs [B, >= Hs, >= Ws, N] (padded is fine)
  and the max p1 and argmax i1 [B, Hs, Ws] of its points covering the image: a point
  adds to at most two masks (pixel_confidence >= 1/3): its best one where p1 > c,
  its second one only where p1 < 1 - c (gathered sparsely). So segment sums over the
  grid points replace the dense [B, Hs, Ws, N] reductions of `mask_scores`."""
  c_lo = pixel_confidence
  n = probs.shape[-1]
  batch = tf.shape(p1)[0]
  ids = i1 + tf.range(batch)[:, None, None] * n
  cov1 = tf.cast(p1 > c_lo, tf.float32)
  where2 = tf.where((p1 > c_lo) & (p1 < max(c_lo, 1.0 - c_lo) + 1e-4))
  cov2, i2 = second_best(tf.gather_nd(probs, where2), tf.gather_nd(i1, where2), c_lo)
  b2 = tf.cast(where2[:, 0], tf.int32)
  p2 = tf.gather_nd(probs, tf.concat([where2, tf.cast(i2, tf.int64)[:, None]], -1))
  cov2 = tf.cast(cov2, tf.float32)
  ids2 = i2 + b2 * n
  total = (_scatter_add(p1 * cov1, ids, batch * n)
           + _scatter_add(p2 * cov2, ids2, batch * n))
  count = _scatter_add(cov1, ids, batch * n) + _scatter_add(cov2, ids2, batch * n)
  return tf.reshape(tf.math.divide_no_nan(total, count), [batch, n])


def pixel_masks(logits: tf.Tensor, crop_h, crop_w, pixel_confidence: float,
                stride: int = 4, xla_compatible: bool = False,
                pixelwise_semantic: bool = True):
  """Which masks cover each pixel (prob > pixel_confidence; at most two), from the
  (cropped) stride-s logits, plus the ordering mask scores and the argmax map.

  Returns (code, where2, cov2, i2, mask_score, argmax):
    code int32 [B, h, w]: the best mask of the pixel if it covers it, else N;
    where2 int64 [P, 3] (b, y, x), cov2 bool [P], i2 int32 [P]: sparsely, the pixels
      whose second-best mask may cover them (all pixels under xla_compatible);
    mask_score [B, N] (see `mask_scores`); argmax int32 [B, h, w], the per-pixel
      argmax over all masks (None unless pixelwise_semantic).

  Cell shortcut (exact): inside a stride-s cell the logits are a convex combination
  of the 4 corner logits, so if all corners share the argmax m and each corner has
  p(m) > max(c, 1 - c), then every pixel of the cell has argmax m with p(m) >= the
  smallest corner p(m) (Jensen on the softmax denominator) and no second mask can
  exceed c; bounds on the largest probability also prove cells empty (a cheap one on
  every cell, then an exact one on the rest). Only the remaining ("boundary") cells
  are upsampled and soft-maxed, s² pixels per cell. The argmax map comes from
  `cell_argmax` (candidate masks only). `xla_compatible=True` upsamples everything
  instead (static shapes).
  """
  s = check_stride(stride)
  n = logits.shape[-1]
  c_lo = pixel_confidence
  c_hi = max(c_lo, 1.0 - c_lo) + 1e-4  # margin over float rounding
  if xla_compatible:
    up = upsample_mask_logits(logits, s)[:, :crop_h, :crop_w]
    top_p, top_i = tf.math.top_k(tf.nn.softmax(up, axis=-1), k=2)
    size = tf.shape(top_p, out_type=tf.int64)
    coords = tf.meshgrid(tf.range(size[0]), tf.range(size[1]), tf.range(size[2]),
                         indexing="ij")
    argmax = (tf.argmax(up, axis=-1, output_type=tf.int32) if pixelwise_semantic
              else None)
    return (tf.where(top_p[..., 0] > c_lo, top_i[..., 0], n),
            tf.reshape(tf.stack(coords, axis=-1), [-1, 3]),
            tf.reshape(top_p[..., 1], [-1]) > c_lo, tf.reshape(top_i[..., 1], [-1]),
            mask_scores(logits, c_lo), argmax)

  grid = pad_grid(logits)
  ig = tf.argmax(grid, axis=-1, output_type=tf.int32)
  argmax_cells = cell_argmax(grid, ig, s) if pixelwise_semantic else None
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
  pp = tf.nn.softmax(interpolate_cells(tf.boolean_mask(corners, nonempty), stride=s),
                     axis=-1)
  p1d = tf.reduce_max(pp, axis=-1)  # [Pc, s², N] -> [Pc, s²]
  i1d = tf.argmax(pp, axis=-1, output_type=tf.int32)

  code = tf.where(clean[..., None], corner_ig[..., :1], n)
  code = tf.broadcast_to(code, tf.concat([tf.shape(clean), [s * s]], 0))
  code = tf.tensor_scatter_nd_update(code, dirty, tf.where(p1d > c_lo, i1d, n))
  code = cells_to_pixels(code, s)[:, :crop_h, :crop_w]

  sel = tf.where((p1d > c_lo) & (p1d < c_hi))  # [Q, 2] (dirty cell, pixel in cell)
  cell = sel[:, 0]
  k = tf.cast(sel[:, 1], tf.int32)
  y = tf.gather(di, cell) * s + k // s
  x = tf.gather(dj, cell) * s + k % s
  inside = (y < crop_h) & (x < crop_w)
  cov2, i2 = second_best(tf.gather_nd(pp, tf.boolean_mask(sel, inside)),
                         tf.boolean_mask(tf.gather_nd(i1d, sel), inside), c_lo)
  where2 = tf.cast(tf.stack([tf.boolean_mask(tf.gather(db, cell), inside),
                             tf.boolean_mask(y, inside), tf.boolean_mask(x, inside)],
                            axis=-1), tf.int64)
  argmax = (None if argmax_cells is None
            else cells_to_pixels(argmax_cells, s)[:, :crop_h, :crop_w])
  score = sparse_mask_scores(probs, p1g[:, :-1, :-1], ig[:, :-1, :-1], c_lo)
  return code, where2, cov2, i2, score, argmax
