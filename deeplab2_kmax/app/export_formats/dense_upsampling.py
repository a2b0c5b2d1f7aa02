"""`mask_upsampling.upsample_mask_logits`, bit for bit, as separable element-wise passes,
laid out by phase (no interleaving copies of the [H, W, N] logits).

The TensorFlow merge interpolates cells with small constant matmuls ([s², 4] stage
matrices on [..., 4, N] corners) and a 6-D transpose back to the pixel layout. Here
the same midpoints are computed element-wise: first along the width for every grid
row (the cells' top and bottom edges), then along the height for every pixel column,
each new position p = 0.5·(position p - step) + 0.5·(position p + step) at steps s/2,
s/4, ..., 1. Every value is the correctly rounded fl((a + b) / 2) of the same pair as
in the matmul stages (`mask_upsampling` explains why any order of evaluation gives
those bits), so the values are identical.

Layout: pixel (y, x) = (s·i + py, s·j + px) of cell (i, j) is stored at
[b, py·s + px, i, j, :] — the s² "phases" of the cells, [B, s², Hs, Ws, N]. Per-pixel
work (softmax, thresholds, argmax, counts over pixels) does not care about the layout,
so the merge runs on phases and only its int32 maps go back to the pixel layout
(`phases_to_pixels`, then a crop to s(Hs-1)+1 x s(Ws-1)+1). Interleaving the float
logits themselves (stack + reshape) cost more than the interpolation in onnxruntime.
The last cell row / column repeat the last grid row / column (`pad_grid`); their
pixels beyond the upsampled size are cropped.
"""

import numpy as np
import tensorflow as tf

from deeplab2_kmax.mask_upsampling import check_stride


def _positions(first, last, stride):
  """Values at positions 0..s-1 between `first` (position 0) and `last` (position s)
  by recursive midpoints, in the order of `mask_upsampling._subdivide`."""
  values = {0: first, stride: last}
  step = stride // 2
  while step >= 1:
    for p in range(step, stride, 2 * step):
      values[p] = 0.5 * values[p - step] + 0.5 * values[p + step]
    step //= 2
  return [values[p] for p in range(stride)]


def upsample_phases(mask_logits: tf.Tensor, stride: int = 4) -> tf.Tensor:
  """[B, Hs, Ws, N] (static Hs, Ws) -> [B, s², Hs, Ws, N] upsampled logits by phase."""
  s = check_stride(stride)
  if None in mask_logits.shape[1:]:
    raise ValueError(f"dense upsampling needs a static grid size, got {mask_logits.shape}")
  g = tf.concat([mask_logits, mask_logits[:, -1:]], axis=1)
  g = tf.concat([g, g[:, :, -1:]], axis=2)  # [B, Hs+1, Ws+1, N]
  columns = _positions(g[:, :, :-1], g[:, :, 1:], s)  # per px: [B, Hs+1, Ws, N]
  rows = [_positions(c[:, :-1], c[:, 1:], s) for c in columns]  # [px][py]
  return tf.stack([rows[px][py] for py in range(s) for px in range(s)], axis=1)


def phases_to_pixels(phases: tf.Tensor, stride: int = 4) -> tf.Tensor:
  """[B, s², Hs, Ws] by phase -> [B, s·Hs, s·Ws] in the pixel layout."""
  s = check_stride(stride)
  _, _, hs, ws = phases.shape
  x = tf.reshape(phases, [-1, s, s, hs, ws])
  x = tf.transpose(x, [0, 3, 1, 4, 2])  # [B, Hs, py, Ws, px]
  return tf.reshape(x, [-1, s * hs, s * ws])


def phase_coordinates(grid_height: int, grid_width: int, stride: int = 4):
  """int32 constants [s², Hs, 1] and [s², 1, Ws]: the pixel row and column of every
  phase position (for masks such as `row < height`)."""
  s = check_stride(stride)
  phase = np.arange(s * s)
  rows = s * np.arange(grid_height)[None, :] + (phase // s)[:, None]
  cols = s * np.arange(grid_width)[None, :] + (phase % s)[:, None]
  return (tf.constant(rows[:, :, None].astype(np.int32)),
          tf.constant(cols[:, None, :].astype(np.int32)))


def upsample_mask_logits(mask_logits: tf.Tensor, stride: int = 4) -> tf.Tensor:
  """[B, Hs, Ws, N] -> [B, s(Hs-1)+1, s(Ws-1)+1, N], equal to
  `mask_upsampling.upsample_mask_logits` (through the phase layout; for tests)."""
  s = check_stride(stride)
  _, hs, ws, n = mask_logits.shape
  phases = upsample_phases(mask_logits, s)  # [B, s², Hs, Ws, N]
  pixels = tf.reshape(tf.transpose(tf.reshape(phases, [-1, s, s, hs, ws, n]),
                                   [0, 3, 1, 4, 2, 5]), [-1, s * hs, s * ws, n])
  return pixels[:, :s * (hs - 1) + 1, :s * (ws - 1) + 1]
