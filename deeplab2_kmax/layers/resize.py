"""Bilinear resize with align_corners=True, in keras.ops (XLA-friendly).

keras.ops.image.resize has no align_corners. DeepLab aligns corners: output pixel i
of an axis of size O samples input coordinate i * (I - 1) / (O - 1). The resize is
written as two small interpolation-matrix products (height, then width), which works
with dynamic sizes, under tf.function and jit_compile.
"""

from keras import ops


def interpolation_matrix(in_size, out_size, dtype="float32"):
  """[out_size, in_size] matrix of align-corners linear interpolation weights."""
  in_f = ops.cast(in_size, "float32")
  out_f = ops.cast(out_size, "float32")
  scale = ops.where(out_f > 1.0, (in_f - 1.0) / ops.maximum(out_f - 1.0, 1.0), 0.0)
  coords = ops.cast(ops.arange(out_size), "float32") * scale
  low = ops.floor(coords)
  frac = coords - low
  low_i = ops.cast(low, "int32")
  high_i = ops.minimum(low_i + 1, ops.cast(in_size, "int32") - 1)
  weights = (ops.one_hot(low_i, in_size) * (1.0 - frac)[:, None]
             + ops.one_hot(high_i, in_size) * frac[:, None])
  return ops.cast(weights, dtype)


def resize_align_corners(x, size):
  """Resizes [B, H, W, C] to size (out_h, out_w) bilinearly with aligned corners."""
  shape = ops.shape(x)
  out_h, out_w = size
  if (isinstance(out_h, int) and isinstance(out_w, int)
      and x.shape[1] == out_h and x.shape[2] == out_w):
    return x
  wh = interpolation_matrix(shape[1], out_h, x.dtype)
  ww = interpolation_matrix(shape[2], out_w, x.dtype)
  x = ops.einsum("oh,bhwc->bowc", wh, x)
  return ops.einsum("pw,bowc->bopc", ww, x)
