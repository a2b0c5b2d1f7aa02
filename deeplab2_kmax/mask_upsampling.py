"""x4 bilinear (align-corners) upsampling of stride-4 mask logits, cell by cell, and the
exact per-pixel argmax over masks without upsampling every mask.

A cell (i, j) of the stride-4 grid holds the 4x4 pixels 4i..4i+3 x 4j..4j+3; their
logits are bilinear in the cell's 4 corner logits (align-corners resize of a 4k+1 input).

Arithmetic (why not one [16, 4] matmul): the merge computes the same upsampled logits on
different subsets (all masks of boundary cells; only the candidate masks of a cell for
the argmax; everything under XLA) and must reproduce `upsample_mask_logits` bit for bit.
A matmul whose weights are arbitrary multiples of 1/16 rounds differently with the
kernel (oneDNN picks kernels by shape; XLA may fuse multiply-adds), so we use midpoint
subdivision instead: the pixel at quarter position 1 is mid(c0, mid(c0, c1)), 2 is
mid(c0, c1), 3 is mid(mid(c0, c1), c1), rows first, then columns. Each of the 4 stages is
a matmul whose outputs are either an input (weight 1) or 0.5·x + 0.5·y, every other
weight 0: the products are exact, so whatever order or fused multiply-add a kernel uses,
each output is the correctly rounded fl((x + y) / 2) and all call sites agree exactly.
The results stay within 1e-5 of tf.image.resize(align_corners=True) and, exactly, inside
[min, max] of the corners, monotone in each corner (used by the argmax bound below).
"""

import numpy as np
import tensorflow as tf


def _stage(rows, num_inputs):
  """Stage matrix: each row is [(input, weight), ...] (weights 1 or 0.5)."""
  m = np.zeros((len(rows), num_inputs), np.float32)
  for r, terms in enumerate(rows):
    for k, w in terms:
      m[r, k] = w
  return m


def _mid(x, y):
  return [(x, 0.5), (y, 0.5)]


# Corners 0..3 = top-left, top-right, bottom-left, bottom-right.
# Stage 1: [c00 c01 c10 c11] -> the horizontal midpoints (top, bottom), appended (6).
_S1 = _stage([_mid(0, 1), _mid(2, 3)], 4)
# Stage 2: the 4 pixels of the top and bottom rows of the cell (8).
_S2 = _stage([[(0, 1.0)], _mid(0, 4), [(4, 1.0)], _mid(4, 1),
              [(2, 1.0)], _mid(2, 5), [(5, 1.0)], _mid(5, 3)], 6)
# Stage 3: vertical midpoints (row 2) of the 4 columns, appended (12).
_S3 = _stage([_mid(b, 4 + b) for b in range(4)], 8)
# Stage 4: the 16 pixels, row-major: rows 0 (top), 1, 2 (midpoints), 3; bottom = 4..7.
_S4 = _stage([[(b, 1.0)] for b in range(4)] + [_mid(b, 8 + b) for b in range(4)]
             + [[(8 + b, 1.0)] for b in range(4)] + [_mid(8 + b, 4 + b) for b in range(4)],
             12)


def interpolate_cells(corners: tf.Tensor, axis: int = -2) -> tf.Tensor:
  """Corner logits -> logits of the cells' 4x4 pixels (row-major), along `axis`:
  [..., 4, N] -> [..., 16, N] (axis=-2) or [Q, 4] -> [Q, 16] (axis=-1)."""
  if axis not in (-2, -1):
    raise ValueError(f"axis must be -2 or -1, got {axis}")

  def apply(stage, x):
    if axis == -2:
      return tf.matmul(tf.constant(stage), x)
    return tf.matmul(x, tf.constant(stage), transpose_b=True)

  x = tf.concat([corners, apply(_S1, corners)], axis)
  rows = apply(_S2, x)
  return apply(_S4, tf.concat([rows, apply(_S3, rows)], axis))


def pad_grid(mask_logits: tf.Tensor) -> tf.Tensor:
  """Repeats the last grid row and column: cell (i, j) then holds pixels 4i..4i+3 x
  4j..4j+3 for every i < Hs, j < Ws (the extra pixels past 4(Hs-1) are cropped)."""
  g = tf.concat([mask_logits, mask_logits[:, -1:]], axis=1)
  return tf.concat([g, g[:, :, -1:]], axis=2)


def cells_to_pixels(cells: tf.Tensor) -> tf.Tensor:
  """[B, Hs, Ws, 16, ...] cell layout -> [B, 4 Hs, 4 Ws, ...] pixel layout."""
  shape = tf.shape(cells)
  rest = shape[4:]
  x = tf.reshape(cells, tf.concat([shape[:3], [4, 4], rest], 0))
  perm = [0, 1, 3, 2, 4] + list(range(5, len(cells.shape) + 1))
  x = tf.transpose(x, perm)
  return tf.reshape(x, tf.concat([[shape[0], 4 * shape[1], 4 * shape[2]], rest], 0))


def all_cell_corners(grid: tf.Tensor) -> tf.Tensor:
  """[B, Hs+1, Ws+1, N] padded grid -> [B, Hs, Ws, 4, N] corner logits of every cell."""
  return tf.stack([grid[:, :-1, :-1], grid[:, :-1, 1:], grid[:, 1:, :-1], grid[:, 1:, 1:]],
                  axis=3)


def gather_cell_corners(grid: tf.Tensor, b, i, j) -> tf.Tensor:
  """[P, 4, N] corner logits of the cells (b, i, j) of the padded grid."""
  shape = tf.shape(grid)
  rows = tf.reshape(grid, [-1, grid.shape[-1]])
  top_left = (b * shape[1] + i) * shape[2] + j
  offsets = tf.stack([0, 1, shape[2], shape[2] + 1])
  return tf.gather(rows, top_left[:, None] + offsets[None, :])


def upsample_mask_logits(mask_logits: tf.Tensor) -> tf.Tensor:
  """Bilinear align-corners upsampling of stride-4 logits [B, Hs, Ws, N] to
  [B, 4(Hs-1)+1, 4(Ws-1)+1, N], with the same arithmetic as every merge path."""
  shape = tf.shape(mask_logits)
  pixels = cells_to_pixels(interpolate_cells(all_cell_corners(pad_grid(mask_logits))))
  return pixels[:, :4 * (shape[1] - 1) + 1, :4 * (shape[2] - 1) + 1]


def crop_grid(mask_logits, output_size, original_size):
  """-> (grid points covering the crop, crop height, crop width). output_size (H, W)
  must be the full upsampled size; original_size (h, w) <= (H, W) or None."""
  shape = tf.shape(mask_logits)
  full_h, full_w = 4 * (shape[1] - 1) + 1, 4 * (shape[2] - 1) + 1
  if output_size is not None:
    tf.debugging.assert_equal(
        tf.stack([output_size[0], output_size[1]]), tf.stack([full_h, full_w]),
        message="MaskWiseMerger: output_size must be 4(Hs-1)+1 x 4(Ws-1)+1 (stride-4 "
        "mask logits of a 4k+1 input)")
  if original_size is None:
    return mask_logits, full_h, full_w
  crop_h = tf.minimum(original_size[0], full_h)
  crop_w = tf.minimum(original_size[1], full_w)
  return mask_logits[:, :(crop_h + 2) // 4 + 1, :(crop_w + 2) // 4 + 1, :], crop_h, crop_w


def cell_argmax(grid: tf.Tensor, grid_argmax: tf.Tensor) -> tf.Tensor:
  """Exact argmax over masks of every upsampled pixel, [B, Hs, Ws, 16] int32 (cell
  layout; the first mask among equal maxima, as tf/np.argmax of upsample_mask_logits).

  grid: padded [B, Hs+1, Ws+1, N]; grid_argmax: its argmax [B, Hs+1, Ws+1]. Every
  interpolated logit of mask n lies in [lo_n, hi_n], the min and max of its 4 corner
  logits, so at every pixel of the cell the best logit is >= t = lo_m for any m (we
  take the best of the corners' argmax masks), and a mask with hi_n < t can neither win
  nor tie there. Only the other ("candidate") masks are interpolated: ~6 of 128 per
  cell on a randomly initialized model, usually 1-2 on a trained one. The candidates
  are a ragged list (tf.where, row-major: sorted by cell, then by mask) reduced per cell
  with sorted segment ops (5x faster than unsorted ones).
  Flat indices are int32: fine up to ~2^31 grid logits (~160 images of 1281^2).
  """
  shape = tf.shape(grid)
  batch, h1, w1, n = shape[0], shape[1], shape[2], grid.shape[-1]
  flat = tf.reshape(grid, [-1])
  corner_offsets = tf.stack([0, 1, w1, w1 + 1])
  top_left = tf.reshape(tf.range(batch * h1 * w1), [batch, h1, w1])[:, :-1, :-1]
  # t per cell: max over the corners' argmax masks m of min over the corners of L_m.
  idx = ((top_left[..., None, None] + corner_offsets) * n
         + all_cell_corners(grid_argmax[..., None])[..., 0][..., None])
  t = tf.reduce_max(tf.reduce_min(tf.gather(flat, idx), axis=-1), axis=-1)
  hi = tf.nn.max_pool2d(grid, 2, 1, "VALID")  # [B, Hs, Ws, N] corner max
  cand = tf.cast(tf.where(hi >= t[..., None]), tf.int32)  # [Q, 4] (b, i, j, mask)
  mask = cand[:, 3]
  cell = (cand[:, 0] * (h1 - 1) + cand[:, 1]) * (w1 - 1) + cand[:, 2]
  first_corner = ((cand[:, 0] * h1 + cand[:, 1]) * w1 + cand[:, 2]) * n + mask
  corners = tf.gather(flat, first_corner[:, None] + corner_offsets[None, :] * n)
  values = interpolate_cells(corners, axis=-1)  # [Q, 16]
  best = tf.math.segment_max(values, cell)
  first = tf.math.segment_min(
      tf.where(values == tf.gather(best, cell), mask[:, None], n), cell)
  # Every cell has a candidate (the mask attaining t); the pad and clamp only keep
  # non-finite logits from producing a wrong shape or out-of-range indices.
  num_cells = batch * (h1 - 1) * (w1 - 1)
  first = tf.pad(tf.minimum(first, n - 1), [[0, num_cells - tf.shape(first)[0]], [0, 0]])
  return tf.reshape(first, [batch, h1 - 1, w1 - 1, 16])
