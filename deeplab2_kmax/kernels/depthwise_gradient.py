"""Training depthwise conv whose kernel gradient is itself one depthwise conv (TF only).

The kernel gradient of a stride-1 'same' k×k depthwise conv is
  dK[i, j, c] = sum_{b, y, x} x_pad[b, y + i, x + j, c] * dy[b, y, x, c],
a correlation of the padded input with the upstream gradient, channel by channel.
TensorFlow's DepthwiseConv2dNativeBackpropFilter (oneDNN on CPU) computes it at
~1.8 GMAC/s: 50-60 ms for one 5×5 conv on a 129×129×256 map (the stride-4 map of a
513 crop), in float32 and in bfloat16 alike, while the forward conv takes 2-6 ms. The
kMaX R50 training step has ten such convs (the pixel head of each of the seven
prediction heads, three in the auxiliary semantic branch), ~0.5 s of kernel time per
step. The same correlation is a *forward* depthwise conv of the padded input with dy
as a (H×W) kernel and a k×k 'valid' output, which oneDNN runs in 4 ms (bfloat16) /
10 ms (float32) for that map; the batch is folded into the channels (one transpose
per tensor when B > 1) and summed afterwards. Accumulation is float32 inside oneDNN
in both dtypes; the result equals the library gradient up to rounding.

Only the TensorFlow backend outside XLA uses this (XLA:CPU lowers depthwise convs to
naive loops, and JAX differentiates the plain conv itself); `applies` says when.
"""

from keras import ops

from deeplab2_kmax.kernels import policy
from deeplab2_kmax.kernels import shifted_depthwise


def applies(kernel_size: int, strides: int, dilation_rate: int) -> bool:
  """Whether `depthwise_conv` should be used for a layer with these settings now."""
  return (policy.enabled() and strides == 1 and dilation_rate == 1 and
          kernel_size % 2 == 1 and policy.tf_library_kernels())


def kernel_gradient(x, dy, kernel_size: int):
  """dK [k, k, C, 1] of a stride-1 'same' depthwise conv, from x and dy [B, H, W, C]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pad = kernel_size // 2
  xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  shape = tf.shape(dy)
  b, h, w, c = shape[0], shape[1], shape[2], shape[3]
  # [B, H', W', C] -> [1, H', W', B*C] (a reshape when B == 1).
  xs = tf.reshape(tf.transpose(xp, [1, 2, 0, 3]), [1, h + 2 * pad, w + 2 * pad, b * c])
  ks = tf.reshape(tf.transpose(dy, [1, 2, 0, 3]), [h, w, b * c, 1])
  out = tf.nn.depthwise_conv2d(xs, ks, [1, 1, 1, 1], "VALID")     # [1, k, k, B*C]
  out = tf.reshape(out, [kernel_size, kernel_size, b, c])
  return tf.reduce_sum(out, axis=2)[..., None]


def depthwise_conv(x, kernel, bias=None):
  """Stride-1 'same' depthwise conv (depth multiplier 1) with the fast kernel gradient.

  Args:
    x: [B, H, W, C] (any float dtype; the kernel is cast to it).
    kernel: [k, k, C, 1], k odd (a variable or tensor; gets its gradient in its dtype).
    bias: optional [C].
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  k = shifted_depthwise.odd_square_kernel_size(kernel, "depthwise_conv")
  # The cast is outside the custom gradient, so the variable's gradient comes back in
  # its own dtype through the cast's gradient.
  kernel = tf.cast(kernel, x.dtype)

  @tf.custom_gradient
  def conv(inputs, filters):
    y = tf.nn.depthwise_conv2d(inputs, filters, [1, 1, 1, 1], "SAME")

    def grad(dy):
      dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
          input_sizes=tf.shape(inputs), filter=filters, out_backprop=dy,
          strides=[1, 1, 1, 1], padding="SAME")
      return dx, kernel_gradient(inputs, dy, k)

    return y, grad

  y = conv(x, kernel)
  if bias is not None:
    y = y + ops.cast(bias, y.dtype)
  return y
