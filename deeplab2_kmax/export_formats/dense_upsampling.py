"""`mask_upsampling.upsample_mask_logits`, bit for bit, as separable element-wise passes.

The TensorFlow merge interpolates cells with small constant matmuls ([s², 4] stage
matrices on [..., 4, N] corners) and a 6-D transpose back to the pixel layout; with
every pixel upsampled (the static-shape merge) that is ~3x slower than needed. The
same midpoints computed element-wise: first along the width for every grid row (the
cells' top and bottom edges), then along the height for every pixel column, each new
position p = 0.5·(position p - step) + 0.5·(position p + step) at steps s/2, s/4, ...,
1. Every value is the correctly rounded fl((a + b) / 2) of the same pair as in the
matmul stages (`mask_upsampling` explains why any order of evaluation gives those
bits), so the results are identical; positions of a level are stacked and reshaped
into place (interleaving without a transpose).
"""

import tensorflow as tf

from deeplab2_kmax.mask_upsampling import check_stride


def _midpoints(x: tf.Tensor, axis: int, stride: int) -> tf.Tensor:
  """Upsamples `x` along `axis` (length L -> s(L-1)+1) by recursive midpoints."""
  length = x.shape[axis]
  if length is None:
    raise ValueError("dense upsampling needs a static grid size")
  if stride == 1 or length == 1:
    return x
  values = {0: tf.gather(x, list(range(length - 1)), axis=axis),
            stride: tf.gather(x, list(range(1, length)), axis=axis)}
  step = stride // 2
  while step >= 1:
    for p in range(step, stride, 2 * step):
      values[p] = 0.5 * values[p - step] + 0.5 * values[p + step]
    step //= 2
  cells = tf.stack([values[p] for p in range(stride)], axis=axis + 1)
  shape = [-1 if d is None else d for d in x.shape]
  shape[0] = tf.shape(x)[0]
  merged = tf.reshape(cells, shape[:axis] + [stride * (length - 1)] + shape[axis + 1:])
  return tf.concat([merged, tf.gather(x, [length - 1], axis=axis)], axis=axis)


def upsample_mask_logits(mask_logits: tf.Tensor, stride: int = 4) -> tf.Tensor:
  """[B, Hs, Ws, N] (static Hs, Ws, N) -> [B, s(Hs-1)+1, s(Ws-1)+1, N], equal to
  `mask_upsampling.upsample_mask_logits`."""
  s = check_stride(stride)
  return _midpoints(_midpoints(mask_logits, 2, s), 1, s)
