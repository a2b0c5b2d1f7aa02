"""Bilinear (align-corners) upsampling of stride-s mask logits (s a power of two: 4, or 2
for the five-stage Cityscapes decoders; 1 is the identity), cell by cell, and the exact
per-pixel argmax over masks without upsampling every mask.

A cell (i, j) of the stride-s grid holds the s x s pixels si..si+s-1 x sj..sj+s-1; their
logits are bilinear in the cell's 4 corner logits (align-corners resize of an sk+1 input).

Arithmetic (why not one [s², 4] matmul): the merge computes the same upsampled logits on
different subsets (all masks of boundary cells; only the candidate masks of a cell for
the argmax; everything under XLA) and must reproduce `upsample_mask_logits` bit for bit.
A matmul whose weights are arbitrary multiples of 1/s² rounds differently with the
kernel (oneDNN picks kernels by shape; XLA may fuse multiply-adds), so we use midpoint
subdivision instead: each level halves the spacing of the known positions, the new one
between known a and b being mid(a, b) (s = 4: quarter position 1 is mid(c0, mid(c0, c1)),
2 is mid(c0, c1), 3 is mid(mid(c0, c1), c1)), rows first, then columns. Each of the
2·log2(s) stages is a matmul whose outputs are either an input (weight 1) or
0.5·x + 0.5·y, every other weight 0: the products are exact, so whatever order or fused
multiply-add a kernel uses, each output is the correctly rounded fl((x + y) / 2) and all
call sites agree exactly. The results stay within 1e-5 of
tf.image.resize(align_corners=True) and, exactly, inside [min, max] of the corners,
monotone in each corner (used by the argmax bound below).
"""

import functools

import numpy as np
import tensorflow as tf


def check_stride(stride) -> int:
  """The mask stride as an int; a power of two (1, 2, 4, 8, ...)."""
  s = int(stride)
  if s != stride or s < 1 or s & (s - 1):
    raise ValueError(f"mask stride must be a power of two (1, 2, 4, ...), got {stride}")
  return s


def _stage(rows, num_inputs):
  """Stage matrix: each row is [(input, weight), ...] (weights 1 or 0.5)."""
  m = np.zeros((len(rows), num_inputs), np.float32)
  for r, terms in enumerate(rows):
    for k, w in terms:
      m[r, k] = w
  return m


def _subdivide(lines, num_inputs, stride, line_major):
  """Midpoint subdivision of `lines` (each {position: input index}, positions 0 and s
  known, in units of 1/s) -> (stages [(matrix, append)], number of outputs). Levels
  but the last append their midpoints (line-major or position-major order) to the
  inputs; the last level outputs positions 0..s-1 of every line (line-major) or every
  position of every line (position-major)."""
  stages = []
  levels = stride.bit_length() - 1
  lines = [dict(line) for line in lines]
  for level in range(1, levels):
    step = stride >> level
    new = range(step, stride, 2 * step)
    pairs = ([(li, p) for li in range(len(lines)) for p in new] if line_major
             else [(li, p) for p in new for li in range(len(lines))])
    rows = []
    for li, p in pairs:
      line = lines[li]
      rows.append([(line[p - step], 0.5), (line[p + step], 0.5)])
      line[p] = num_inputs + len(rows) - 1
    stages.append((_stage(rows, num_inputs), True))
    num_inputs += len(rows)
  pairs = ([(li, p) for li in range(len(lines)) for p in range(stride)] if line_major
           else [(li, p) for p in range(stride) for li in range(len(lines))])
  rows = []
  for li, p in pairs:
    line = lines[li]
    rows.append([(line[p], 1.0)] if p in line
                else [(line[p - 1], 0.5), (line[p + 1], 0.5)])
  stages.append((_stage(rows, num_inputs), False))
  return stages, len(rows)


@functools.lru_cache(maxsize=None)
def cell_stages(stride: int):
  """The stage matrices of a stride: [(matrix [outputs, inputs], append)]. Corners
  0..3 = top-left, top-right, bottom-left, bottom-right; rows first (the top and bottom
  rows' pixels, line-major: [top 0..s-1, bottom 0..s-1]), then every column (the s²
  pixels, row-major). s = 4 gives the 4 stages [2x4 append, 8x6, 4x8 append, 16x12]."""
  s = check_stride(stride)
  rows, num_rows = _subdivide([{0: 0, s: 1}, {0: 2, s: 3}], 4, s, line_major=True)
  cols, _ = _subdivide([{0: b, s: s + b} for b in range(s)], num_rows, s,
                       line_major=False)
  return tuple(rows + cols)


def interpolate_cells(corners: tf.Tensor, axis: int = -2, stride: int = 4) -> tf.Tensor:
  """Corner logits -> logits of the cells' s x s pixels (row-major), along `axis`:
  [..., 4, N] -> [..., s², N] (axis=-2) or [Q, 4] -> [Q, s²] (axis=-1)."""
  if axis not in (-2, -1):
    raise ValueError(f"axis must be -2 or -1, got {axis}")

  def apply(stage, x):
    if axis == -2:
      return tf.matmul(tf.constant(stage), x)
    return tf.matmul(x, tf.constant(stage), transpose_b=True)

  x = corners
  for stage, append in cell_stages(stride):
    x = tf.concat([x, apply(stage, x)], axis) if append else apply(stage, x)
  return x


def pad_grid(mask_logits: tf.Tensor) -> tf.Tensor:
  """Repeats the last grid row and column: cell (i, j) then holds pixels si..si+s-1 x
  sj..sj+s-1 for every i < Hs, j < Ws (the extra pixels past s(Hs-1) are cropped)."""
  g = tf.concat([mask_logits, mask_logits[:, -1:]], axis=1)
  return tf.concat([g, g[:, :, -1:]], axis=2)


def cells_to_pixels(cells: tf.Tensor, stride: int = 4) -> tf.Tensor:
  """[B, Hs, Ws, s², ...] cell layout -> [B, s Hs, s Ws, ...] pixel layout."""
  s = check_stride(stride)
  shape = tf.shape(cells)
  rest = shape[4:]
  x = tf.reshape(cells, tf.concat([shape[:3], [s, s], rest], 0))
  perm = [0, 1, 3, 2, 4] + list(range(5, len(cells.shape) + 1))
  x = tf.transpose(x, perm)
  return tf.reshape(x, tf.concat([[shape[0], s * shape[1], s * shape[2]], rest], 0))


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


def upsample_mask_logits(mask_logits: tf.Tensor, stride: int = 4) -> tf.Tensor:
  """Bilinear align-corners upsampling of stride-s logits [B, Hs, Ws, N] to
  [B, s(Hs-1)+1, s(Ws-1)+1, N], with the same arithmetic as every merge path."""
  s = check_stride(stride)
  shape = tf.shape(mask_logits)
  pixels = cells_to_pixels(
      interpolate_cells(all_cell_corners(pad_grid(mask_logits)), stride=s), s)
  return pixels[:, :s * (shape[1] - 1) + 1, :s * (shape[2] - 1) + 1]


def crop_grid(mask_logits, output_size, original_size, stride: int = 4):
  """-> (grid points covering the crop, crop height, crop width). output_size (H, W)
  must be the full upsampled size s(Hs-1)+1 x s(Ws-1)+1; original_size (h, w) <= (H, W)
  or None."""
  s = check_stride(stride)
  shape = tf.shape(mask_logits)
  full_h, full_w = s * (shape[1] - 1) + 1, s * (shape[2] - 1) + 1
  if output_size is not None:
    tf.debugging.assert_equal(
        tf.stack([output_size[0], output_size[1]]), tf.stack([full_h, full_w]),
        message=f"MaskWiseMerger(mask_stride={s}): output_size must be {s}(Hs-1)+1 x "
        f"{s}(Ws-1)+1 (stride-{s} mask logits of a {s}k+1 input; is mask_stride the "
        "model's output_stride?)")
  if original_size is None:
    return mask_logits, full_h, full_w
  crop_h = tf.minimum(original_size[0], full_h)
  crop_w = tf.minimum(original_size[1], full_w)
  return (mask_logits[:, :(crop_h + s - 2) // s + 1, :(crop_w + s - 2) // s + 1, :],
          crop_h, crop_w)


def cell_argmax(grid: tf.Tensor, grid_argmax: tf.Tensor, stride: int = 4) -> tf.Tensor:
  """Exact argmax over masks of every upsampled pixel, [B, Hs, Ws, s²] int32 (cell
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
  s = check_stride(stride)
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
  values = interpolate_cells(corners, axis=-1, stride=s)  # [Q, s²]
  best = tf.math.segment_max(values, cell)
  first = tf.math.segment_min(
      tf.where(values == tf.gather(best, cell), mask[:, None], n), cell)
  # Every cell has a candidate (the mask attaining t); the pad and clamp only keep
  # non-finite logits from producing a wrong shape or out-of-range indices.
  num_cells = batch * (h1 - 1) * (w1 - 1)
  first = tf.pad(tf.minimum(first, n - 1), [[0, num_cells - tf.shape(first)[0]], [0, 0]])
  return tf.reshape(first, [batch, h1 - 1, w1 - 1, s * s])
