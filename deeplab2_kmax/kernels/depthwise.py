"""Fast forms of a depthwise convolution, optionally followed by a batch norm.

`depthwise_bn(conv, bn, x, training)` returns `bn(conv(x))` (or `conv(x)` without a BN)
for a built Keras `DepthwiseConv2D` (depth multiplier 1, odd square kernel; `x` already
padded by the caller for strided convs) by the fastest applicable form, or None:

* compiled by XLA (inference, and training on CPUs): the shifted-slice sum of
  `shifted_depthwise` (XLA:CPU lowers a depthwise conv to a naive loop);
* inference otherwise: the BN folded into the depthwise kernel (`bn_folding`);
* training with TF's library kernels: `depthwise_gradient`'s conv, whose kernel
  gradient is one forward depthwise conv (~12× faster than oneDNN's backprop-filter).
Used by the depthwise-separable convs of the heads and semantic branch and by ConvNeXt.
"""

from keras import ops

from deeplab2_kmax.kernels import bn_folding
from deeplab2_kmax.kernels import depthwise_gradient
from deeplab2_kmax.kernels import policy
from deeplab2_kmax.kernels import shifted_depthwise


def depthwise_bn(conv, bn, x, training):
  """`bn(conv(x))` by a fast form, or None (see the module docstring)."""
  if not policy.enabled():
    return None
  affine = bn_folding.folded_affine(bn, training, x.dtype)
  kernel, bias = conv.kernel, conv.bias if conv.use_bias else None
  if affine is not None:
    kernel = ops.cast(kernel, x.dtype) * affine[0][:, None]
    bias = affine[1] if bias is None else ops.cast(bias, x.dtype) * affine[0] + affine[1]
  stride1 = tuple(conv.strides) == (1, 1)
  dilation = int(conv.dilation_rate[0])
  if stride1 and shifted_depthwise.use_shifted_depthwise(training):
    y = shifted_depthwise.shifted_depthwise_conv(x, kernel, dilation, bias)
  elif affine is not None:
    y = ops.depthwise_conv(x, ops.cast(kernel, x.dtype), strides=conv.strides,
                           padding=conv.padding, dilation_rate=conv.dilation_rate) + bias
  elif training and depthwise_gradient.applies(conv.kernel_size[0], conv.strides[0],
                                               dilation):
    y = depthwise_gradient.depthwise_conv(x, kernel, bias)
  else:
    return None
  if affine is None and bn is not None:
    y = bn(y, training=training)
  return y
