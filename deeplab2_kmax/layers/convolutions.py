"""Convolution helpers: conv + norm + activation, and depthwise-separable conv.

Padding follows DeepLab: 'same' for stride 1; for stride > 1 the input is padded
symmetrically by (effective_kernel - 1) // 2 on every side and a 'valid' convolution
is applied, so that output pixel i is centred on input pixel stride * i (this keeps
the `stride * k + 1` crop alignment exact). Output size is ceil(input / stride).
"""

from typing import Any, Mapping, Optional

import keras
from keras import ops

from deeplab2_kmax.layers import bn_folding
from deeplab2_kmax.layers import depthwise_gradient
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import xla_paths


def atrous_conv(x, kernel, dilation_rate: int):
  """Stride-1 'same' atrous (dilated) conv of x [B, H, W, Cin] with kernel [k, k, Cin, Cout].

  On TensorFlow, `keras.ops.conv` goes through `tf.nn.convolution`, which runs every
  dilated conv as SpaceToBatchND -> conv -> BatchToSpaceND: for the ASPP's rate-12 conv
  on the 17x17x2048 stride-32 map of a 513 crop that is a conv over 144 tiny images,
  and forward + backward take 183 ms (bfloat16) / 214 ms (float32) against 35 / 40 ms
  for `tf.nn.conv2d` with native dilations (oneDNN's dilated kernels; the same result,
  bit-identical in float32). JAX's `ops.conv` is already native.
  """
  if keras.backend.backend() == "tensorflow":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.nn.conv2d(x, ops.cast(kernel, x.dtype), strides=1, padding="SAME",
                        dilations=dilation_rate)
  return ops.conv(x, ops.cast(kernel, x.dtype), strides=1, padding="same",
                  dilation_rate=dilation_rate)


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

  def _atrous_taps(self, x):
    """The only kernel tap of a stride-1 atrous conv that reads image pixels, or None.

    A 'same' atrous conv (stride 1, dilation > 1) whose dilation is >= the static
    height and width reads only zero padding at every off-centre tap, so it equals
    the 1x1 conv with the centre tap (the ASPP rate-18 branch on the 17x17 stride-32
    map of a 513 crop). oneDNN's atrous conv and its two backprops take ~30x longer
    than that 1x1 conv (0.57 s vs 0.02 s forward+backward at 17x17x2048->256); the
    result is identical and the kernel gradient the same up to float rounding (zero
    at the off-centre taps in both). Other atrous convs (e.g. rates 6 and 12 there)
    keep the oneDNN conv: an im2col over all their taps measured no faster.
    """
    height, width = x.shape[1], x.shape[2]
    if (self.strides != 1 or self.dilation_rate <= 1 or self.kernel_size <= 1 or
        height is None or width is None):
      return None
    c, d = self.kernel_size // 2, self.dilation_rate
    rows = [i for i in range(self.kernel_size) if abs(i - c) * d < height]
    cols = [j for j in range(self.kernel_size) if abs(j - c) * d < width]
    taps = [(i, j) for i in rows for j in cols]
    return taps if len(taps) == 1 else None

  def _atrous_conv(self, x, taps, kernel):
    c, d = self.kernel_size // 2, self.dilation_rate
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
    return ops.conv(patches, ops.cast(weights, patches.dtype), strides=1,
                    padding="valid")

  def _with_bias(self, y):
    """y + the conv bias, for the convs computed here instead of by `self.conv`."""
    return ops.add(y, ops.cast(self.conv.bias, y.dtype)) if self.use_bias else y

  def call(self, x, training=False):
    subsampled = self.strides != 1 and self.kernel_size == 1 and training
    if subsampled:
      # A strided 1x1 conv reads only the pixels on the stride grid: in training,
      # subsample them and run a stride-1 1x1 conv (the same values; ceil(H / s)
      # outputs either way). oneDNN's kernel gradient of the strided form is 3-7x
      # slower than the 1x1 conv's (the ResNet projection shortcuts at crop 513 in
      # bfloat16: 13.6, 17.0, 25.7 ms vs ~3.5 ms for the block's other 1x1 convs).
      # Not at inference: there the slice costs more than it saves (forward only,
      # bf16, 161²x256->512: strided conv 5.5 ms vs slice + conv 15.2 ms).
      x = x[:, ::self.strides, ::self.strides, :]
    elif self.strides != 1:
      x = _symmetric_pad(x, self.kernel_size, self.dilation_rate)
    # At inference the BN is folded into the kernel (bn_folding): one fused bias add
    # instead of the BN's separate multiply and add over the whole activation.
    affine = bn_folding.folded_affine(self.bn, training, x.dtype)
    kernel = self.conv.kernel
    if affine is not None:
      kernel = ops.cast(kernel, x.dtype) * affine[0]
    taps = self._atrous_taps(x)
    if taps is not None:
      x = self._with_bias(self._atrous_conv(x, taps, kernel))
    elif subsampled:  # the stride-1 1x1 conv of the subsampled grid
      x = self._with_bias(ops.conv(x, ops.cast(kernel, x.dtype), strides=1,
                                   padding="valid"))
    elif self.strides == 1 and self.dilation_rate > 1:
      x = self._with_bias(atrous_conv(x, kernel, self.dilation_rate))
    elif affine is not None:
      x = self.conv.convolution_op(x, kernel)
    else:
      x = self.conv(x)
    if affine is not None:
      x = x + affine[1]
    elif self.bn is not None:
      x = self.bn(x, training=training)
    return self._act(x)

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
    affine = bn_folding.folded_affine(self.depthwise_bn, training, x.dtype)
    if self.strides == 1 and xla_paths.use_shifted_depthwise(training):
      # XLA:CPU runs a depthwise conv (and its gradients) as a naive loop (~40x
      # slower than oneDNN); the shifted-slice sum fuses into fast loops there.
      kernel, bias = self.depthwise.kernel, self.depthwise.bias
      if affine is not None:
        kernel, bias = ops.cast(kernel, x.dtype) * affine[0][:, None], affine[1]
      x = xla_paths.shifted_depthwise_conv(x, kernel, self.dilation_rate, bias)
    elif affine is not None:  # inference: BN folded into the depthwise kernel
      kernel = ops.cast(self.depthwise.kernel, x.dtype) * affine[0][:, None]
      x = ops.depthwise_conv(
          x, kernel, strides=self.depthwise.strides, padding=self.depthwise.padding,
          dilation_rate=self.depthwise.dilation_rate) + affine[1]
    elif training and depthwise_gradient.applies(self.kernel_size, self.strides,
                                                 self.dilation_rate):
      # Same conv; its kernel gradient as one depthwise conv (~12x faster, see
      # depthwise_gradient).
      x = depthwise_gradient.depthwise_conv(x, self.depthwise.kernel,
                                            self.depthwise.bias)
    else:
      x = self.depthwise(x)
    if affine is None and self.depthwise_bn is not None:  # not folded above
      x = self.depthwise_bn(x, training=training)
    x = self._act(x)
    return self.pointwise(x, training=training)

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
    affine = bn_folding.folded_affine(self.bn, training, x.dtype)
    if affine is not None:  # inference: BN folded into the kernel
      kernel = ops.cast(self.dense.kernel, x.dtype) * affine[0]
      x = ops.matmul(x, kernel) + affine[1]
    else:
      x = self.dense(x)
      if self.bn is not None:
        x = self.bn(x, training=training)
    return self._act(x)

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
