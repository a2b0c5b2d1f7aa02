"""Fast forms of a convolution followed by a batch norm (`layers.ConvBN`).

`conv_bn(layer, x, training)` returns `layer.bn(layer.conv(x))` (before the activation;
`x` already DeepLab-padded by the layer) computed by the fastest applicable form, or None
when none applies (the layer then runs its plain Keras conv and BN):

* inference: the BN folded into the kernel and a bias (`bn_folding`), one fused bias
  add instead of the BN's two passes;
* training: a strided 1×1 conv as a stride-1 1×1 conv of the stride grid (oneDNN's
  kernel gradient of the strided form is 3-7× slower: the ResNet projection shortcuts
  at crop 513 in bfloat16 took 13.6, 17.0, 25.7 ms vs ~3.5 ms for the other 1×1 convs;
  not at inference, where the slice costs more than it saves: 161²×256→512 forward,
  strided conv 5.5 ms vs slice + conv 15.2 ms);
* an atrous conv whose dilation reaches past the image at every off-centre tap (the
  ASPP rate-18 branch on the 17×17 map of a 513 crop) as the 1×1 conv of its only live
  tap (oneDNN's atrous conv and its backprops: 0.57 s vs 0.02 s at 17²×2048→256);
* TensorFlow: other atrous convs through `tf.nn.conv2d`'s native dilations
  (`keras.ops.conv` runs them as SpaceToBatchND → conv → BatchToSpaceND, a conv over
  144 tiny images for rate 12 at 17²: fwd+bwd 183 → 35 ms in bfloat16, bit-identical
  in float32). JAX's conv is native already.
"""

from keras import ops

from deeplab2_kmax.kernels import bn_folding
from deeplab2_kmax.kernels import policy


def atrous_conv(x, kernel, dilation_rate: int):
  """Stride-1 'same' atrous conv with native dilations (TensorFlow) or keras.ops."""
  if policy.backend() == "tensorflow":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.nn.conv2d(x, ops.cast(kernel, x.dtype), strides=1, padding="SAME",
                        dilations=dilation_rate)
  return ops.conv(x, ops.cast(kernel, x.dtype), strides=1, padding="same",
                  dilation_rate=dilation_rate)


def live_atrous_taps(kernel_size: int, strides: int, dilation_rate: int, x):
  """The only kernel tap of a stride-1 atrous conv that reads image pixels, as
  [(i, j)], or None (several live taps, or unknown static size)."""
  height, width = x.shape[1], x.shape[2]
  if (strides != 1 or dilation_rate <= 1 or kernel_size <= 1 or height is None or
      width is None):
    return None
  c, d = kernel_size // 2, dilation_rate
  rows = [i for i in range(kernel_size) if abs(i - c) * d < height]
  cols = [j for j in range(kernel_size) if abs(j - c) * d < width]
  taps = [(i, j) for i in rows for j in cols]
  return taps if len(taps) == 1 else None


def _tap_conv(x, taps, kernel, kernel_size: int, dilation_rate: int):
  c, d = kernel_size // 2, dilation_rate
  height, width = x.shape[1], x.shape[2]
  pad_h = max(abs(i - c) for i, _ in taps) * d
  pad_w = max(abs(j - c) for _, j in taps) * d
  if pad_h or pad_w:
    x = ops.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
  views = [x[:, pad_h + (i - c) * d:pad_h + (i - c) * d + height,
             pad_w + (j - c) * d:pad_w + (j - c) * d + width, :]
           for i, j in taps]
  weights = ops.concatenate([kernel[i:i + 1, j:j + 1] for i, j in taps], axis=2)
  patches = views[0] if len(views) == 1 else ops.concatenate(views, axis=-1)
  return ops.conv(patches, ops.cast(weights, patches.dtype), strides=1, padding="valid")


def conv_bn(layer, x, training):
  """`layer.bn(layer.conv(x))` by a fast form, or None (see the module docstring).

  `layer` is a ConvBN (attributes conv, bn, strides, kernel_size, dilation_rate,
  use_bias); `x` is its input after the DeepLab padding of strided convs (a no-op for
  1×1 kernels).
  """
  if not policy.enabled():
    return None
  affine = bn_folding.folded_affine(layer.bn, training, x.dtype)
  subsampled = layer.strides != 1 and layer.kernel_size == 1 and bool(training)
  if subsampled:
    x = x[:, ::layer.strides, ::layer.strides, :]
  taps = live_atrous_taps(layer.kernel_size, layer.strides, layer.dilation_rate, x)
  native = (layer.strides == 1 and layer.dilation_rate > 1 and
            policy.backend() == "tensorflow")
  if affine is None and not (subsampled or taps or native):
    return None
  kernel = layer.conv.kernel
  if affine is not None:
    kernel = ops.cast(kernel, x.dtype) * affine[0]
  if taps is not None:
    y = _tap_conv(x, taps, kernel, layer.kernel_size, layer.dilation_rate)
  elif subsampled:
    y = ops.conv(x, ops.cast(kernel, x.dtype), strides=1, padding="valid")
  elif native:
    y = atrous_conv(x, kernel, layer.dilation_rate)
  else:
    y = layer.conv.convolution_op(x, ops.cast(kernel, x.dtype))
  if layer.use_bias:
    bias = ops.cast(layer.conv.bias, y.dtype)
    y = y + (bias if affine is None else bias * affine[0])
  if affine is not None:
    return y + affine[1]
  return y if layer.bn is None else layer.bn(y, training=training)
