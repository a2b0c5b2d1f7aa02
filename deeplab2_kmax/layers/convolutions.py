"""Convolution helpers: conv + norm + activation, and depthwise-separable conv.

Padding follows DeepLab: 'same' for stride 1; for stride > 1 the input is padded
symmetrically by (effective_kernel - 1) // 2 on every side and a 'valid' convolution
is applied, so that output pixel i is centred on input pixel stride * i (this keeps
the `stride * k + 1` crop alignment exact). Output size is ceil(input / stride).
"""

from typing import Any, Mapping, Optional

import keras
from keras import ops

from deeplab2_kmax.kernels import bn_folding
from deeplab2_kmax.kernels import conv as conv_kernels
from deeplab2_kmax.kernels import depthwise as depthwise_kernels
from deeplab2_kmax.layers import normalization


def _symmetric_pad(x, kernel_size: int, dilation_rate: int):
  effective = kernel_size + (kernel_size - 1) * (dilation_rate - 1)
  pad = (effective - 1) // 2
  if pad == 0:
    return x
  return ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class ConvBN(keras.layers.Layer):
  """Conv2D → optional BatchNorm → optional activation.

  Args:
    filters: output channels.
    kernel_size: square kernel size.
    strides: stride (DeepLab-aligned padding when > 1).
    dilation_rate: atrous rate.
    use_bias: conv bias (must be False when use_bn).
    use_bn: add a batch norm after the conv.
    bn_gamma_initializer: "ones", or "zeros" at the end of a residual branch.
    activation: activation name ('relu', 'gelu', 'none'/None).
    norm_config: see `normalization.batch_norm`.
    kernel_initializer: conv kernel initializer (default he_normal, as deeplab2).
  """

  def __init__(self, filters: int, kernel_size: int = 1, strides: int = 1,
               dilation_rate: int = 1, use_bias: bool = False,
               use_bn: bool = True, bn_gamma_initializer: str = "ones",
               activation: Optional[str] = None,
               norm_config: Optional[Mapping[str, Any]] = None,
               kernel_initializer: Any = "he_normal", **kwargs):
    super().__init__(**kwargs)
    if use_bn and use_bias:
      raise ValueError("ConvBN: use_bias must be False when use_bn is True.")
    self.filters = filters
    self.kernel_size = kernel_size
    self.strides = strides
    self.dilation_rate = dilation_rate
    self.use_bias = use_bias
    self.use_bn = use_bn
    self.bn_gamma_initializer = bn_gamma_initializer
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.kernel_initializer = kernel_initializer
    self.conv = keras.layers.Conv2D(
        filters, kernel_size, strides=strides,
        padding="same" if strides == 1 else "valid",
        dilation_rate=dilation_rate, use_bias=use_bias,
        kernel_initializer=kernel_initializer, name="conv")
    self.bn = (normalization.batch_norm(
        self.norm_config, gamma_initializer=bn_gamma_initializer, name="bn")
               if use_bn else None)
    self._act = normalization.get_activation(activation)

  def build(self, input_shape):
    # The kernel depends only on the channels. Building on the unpadded spatial
    # size would fail for strided 'valid' convs on inputs smaller than the kernel
    # (e.g. 3x3 stride 2 on 2x2), although `call` pads first; so spatial dims are
    # left unknown here.
    conv_in = (input_shape[0], None, None, input_shape[-1])
    self.conv.build(conv_in)
    if self.bn is not None:
      self.bn.build((input_shape[0], None, None, self.filters))

  def call(self, x, training=False):
    if self.strides != 1:
      x = _symmetric_pad(x, self.kernel_size, self.dilation_rate)
    # A fast form (folded BN, native atrous conv, ...; kernels.conv) when one applies.
    y = conv_kernels.conv_bn(self, x, training)
    if y is None:
      y = self.conv(x)
      if self.bn is not None:
        y = self.bn(y, training=training)
    return self._act(y)

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters, "kernel_size": self.kernel_size,
        "strides": self.strides, "dilation_rate": self.dilation_rate,
        "use_bias": self.use_bias, "use_bn": self.use_bn,
        "bn_gamma_initializer": self.bn_gamma_initializer,
        "activation": self.activation, "norm_config": self.norm_config,
        "kernel_initializer": keras.initializers.serialize(
            keras.initializers.get(self.kernel_initializer)),
    })
    return config


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class DepthwiseSeparableConv(keras.layers.Layer):
  """Depthwise k×k conv (+BN+act) followed by a pointwise 1×1 conv (+BN+act).

  Args:
    filters: output channels of the pointwise conv.
    kernel_size: depthwise kernel size (5 in the kMaX heads).
    strides, dilation_rate: of the depthwise conv.
    use_bn: BN after each conv (no conv biases then).
    activation: applied after each of the two convs.
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, filters: int, kernel_size: int = 5, strides: int = 1,
               dilation_rate: int = 1, use_bn: bool = True,
               activation: Optional[str] = None,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = kernel_size
    self.strides = strides
    self.dilation_rate = dilation_rate
    self.use_bn = use_bn
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.depthwise = keras.layers.DepthwiseConv2D(
        kernel_size, strides=strides,
        padding="same" if strides == 1 else "valid",
        dilation_rate=dilation_rate, use_bias=not use_bn, name="depthwise")
    self.depthwise_bn = (normalization.batch_norm(self.norm_config, name="depthwise_bn")
                         if use_bn else None)
    self.pointwise = ConvBN(filters, 1, use_bias=not use_bn, use_bn=use_bn,
                            activation=activation, norm_config=self.norm_config,
                            name="pointwise")
    self._act = normalization.get_activation(activation)

  def build(self, input_shape):
    # Unknown spatial dims, as in ConvBN.build (strided 'valid' on tiny inputs).
    shape = (input_shape[0], None, None, input_shape[-1])
    self.depthwise.build(shape)
    if self.depthwise_bn is not None:
      self.depthwise_bn.build(shape)
    self.pointwise.build(shape)

  def call(self, x, training=False):
    if self.strides != 1:
      x = _symmetric_pad(x, self.kernel_size, self.dilation_rate)
    # A fast form (folded BN, shifted slices under XLA, ...; kernels.depthwise).
    y = depthwise_kernels.depthwise_bn(self.depthwise, self.depthwise_bn, x, training)
    if y is None:
      y = self.depthwise(x)
      if self.depthwise_bn is not None:
        y = self.depthwise_bn(y, training=training)
    return self.pointwise(self._act(y), training=training)

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters, "kernel_size": self.kernel_size,
        "strides": self.strides, "dilation_rate": self.dilation_rate,
        "use_bn": self.use_bn, "activation": self.activation,
        "norm_config": self.norm_config,
    })
    return config


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class DenseBN(keras.layers.Layer):
  """Linear projection of the last axis (a 1×1 conv / Conv1D) → optional BN → act.

  Works on any rank, e.g. cluster centers [B, N, C] or flattened pixels [B, L, C].

  Args:
    units: output channels.
    use_bias: add a bias (must be False when use_bn).
    use_bn: batch norm over the last axis.
    bn_gamma_initializer: "ones", or "zeros" at the end of a residual branch.
    activation: activation name.
    kernel_initializer: kernel initializer (default he_normal).
    bias_initializer: bias initializer.
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, units: int, use_bias: bool = False, use_bn: bool = True,
               bn_gamma_initializer: str = "ones",
               activation: Optional[str] = None,
               kernel_initializer: Any = "he_normal",
               bias_initializer: Any = "zeros",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    if use_bn and use_bias:
      raise ValueError("DenseBN: use_bias must be False when use_bn is True.")
    self.units = units
    self.use_bias = use_bias
    self.use_bn = use_bn
    self.bn_gamma_initializer = bn_gamma_initializer
    self.activation = activation
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.bias_initializer = keras.initializers.get(bias_initializer)
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.dense = keras.layers.Dense(units, use_bias=use_bias,
                                    kernel_initializer=self.kernel_initializer,
                                    bias_initializer=self.bias_initializer,
                                    name="dense")
    self.bn = (normalization.batch_norm(
        self.norm_config, gamma_initializer=bn_gamma_initializer, name="bn")
               if use_bn else None)
    self._act = normalization.get_activation(activation)

  def build(self, input_shape):
    self.dense.build(tuple(input_shape))
    if self.bn is not None:
      self.bn.build(tuple(input_shape[:-1]) + (self.units,))

  def call(self, x, training=False):
    y = bn_folding.linear_bn(self.dense, self.bn, x, training)  # folded at inference
    if y is None:
      y = self.dense(x)
      if self.bn is not None:
        y = self.bn(y, training=training)
    return self._act(y)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.units,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "units": self.units, "use_bias": self.use_bias, "use_bn": self.use_bn,
        "bn_gamma_initializer": self.bn_gamma_initializer,
        "activation": self.activation,
        "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        "norm_config": self.norm_config,
    })
    return config
