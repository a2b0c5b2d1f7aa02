"""Normalization factory: batch norm (optionally synchronized) with deeplab2 defaults.

kMaX-DeepLab uses synchronized batch norm with momentum 0.99 and epsilon 1e-3 everywhere
(KMAX.md "Details from deeplab2"). Layers take a `norm_config` dict (serializable, gin
bindable) and call `batch_norm(norm_config, ...)` to build their norm layers.
"""

from typing import Any, Mapping, Optional

import keras
from keras import ops

from deeplab2_kmax.layers import fused_gelu

DEFAULT_NORM_CONFIG = {"momentum": 0.99, "epsilon": 1e-3, "synchronized": False}


def resolve_norm_config(norm_config: Optional[Mapping[str, Any]]) -> dict:
  """Returns a full norm config dict: defaults overridden by `norm_config`."""
  config = dict(DEFAULT_NORM_CONFIG)
  if norm_config:
    unknown = set(norm_config) - set(DEFAULT_NORM_CONFIG)
    if unknown:
      raise ValueError(f"Unknown norm_config keys {sorted(unknown)}; "
                       f"allowed: {sorted(DEFAULT_NORM_CONFIG)}")
    config.update(norm_config)
  return config


def batch_norm(norm_config: Optional[Mapping[str, Any]] = None,
               axis: int = -1,
               gamma_initializer: Any = "ones",
               name: Optional[str] = None) -> keras.layers.BatchNormalization:
  """Builds a BatchNormalization layer.

  Args:
    norm_config: dict with optional keys `momentum` (0.99), `epsilon` (1e-3) and
      `synchronized` (False; True gives cross-replica synchronized BN).
    axis: the feature axis.
    gamma_initializer: initializer of the scale (use "zeros" at the end of residual
      branches).
    name: layer name.
  """
  config = resolve_norm_config(norm_config)
  return BatchNormalization(
      axis=axis,
      momentum=config["momentum"],
      epsilon=config["epsilon"],
      synchronized=config["synchronized"],
      gamma_initializer=gamma_initializer,
      name=name)


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class BatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization whose training step uses TF's fused kernel.

  Same variables (gamma, beta, moving_mean, moving_variance), config, outputs,
  gradients and moving-statistics updates as the Keras layer. Only the training-mode
  forward differs, and only on the TensorFlow backend without synchronization:
  Keras 3 computes it as moments + elementwise ops, whose backward is a dozen
  elementwise passes over every activation and keeps several activation-sized
  intermediates alive until the backward; TF's FusedBatchNormV3 (what tf.keras 2 and
  deeplab2 used) does the forward in one kernel and its gradient in another, saving
  only the batch mean and inverse standard deviation. Anything else (synchronized BN,
  masks, renorm, no scale/center, other backends such as JAX) takes the Keras path.
  """

  def _use_fused(self, inputs, training, mask) -> bool:
    return (bool(training) and self.trainable and mask is None
            and not self.synchronized and not self.renorm
            and self.scale and self.center
            # The fused op exists only in TensorFlow: the one backend check of the
            # model layers, for the training speed/memory of the TF trainer.
            and keras.backend.backend() == "tensorflow"
            and inputs.shape.rank is not None and inputs.shape.rank >= 2
            and self.axis in (1, inputs.shape.rank - 1, -1))

  def call(self, inputs, training=None, mask=None):
    if not self._use_fused(inputs, training, mask):
      return super().call(inputs, training=training, mask=mask)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    rank = inputs.shape.rank
    # Statistics in float32 as Keras; the fused op takes bf16/f16 activations itself
    # (float32 scale/offset/statistics, output in the input dtype): bit-identical to
    # casting to float32 and back, without the two casts per BN and per backward
    # (~30% of the BN time under mixed_bfloat16).
    x = (inputs if inputs.dtype in (tf.bfloat16, tf.float16, tf.float32)
         else tf.cast(inputs, tf.float32))
    axis = self.axis % rank
    data_format = "NHWC"
    if rank != 4:  # any rank with the channels last is [1, 1, pixels, channels]
      if axis != rank - 1:
        x = tf.experimental.numpy.moveaxis(x, axis, -1)
      x4 = tf.reshape(x, [1, 1, -1, tf.shape(x)[-1]])
    else:
      x4 = x
      if axis == 1:
        data_format = "NCHW"
    y, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
        x4, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
        epsilon=self.epsilon, data_format=data_format, is_training=True)
    if rank != 4:
      y = tf.reshape(y, tf.shape(x))
      if axis != rank - 1:
        y = tf.experimental.numpy.moveaxis(y, -1, axis)
    # The op returns the Bessel-corrected variance; Keras (and the normalization
    # itself) uses the biased one for the moving variance.
    count = tf.cast(tf.size(x4) // tf.shape(x4)[3 if data_format == "NHWC" else 1],
                    tf.float32)
    variance = unbiased_variance * tf.math.divide_no_nan(count - 1.0, count)
    variance = tf.where(count > 1.0, variance, unbiased_variance * 0.0)
    momentum = self.momentum
    self.moving_mean.assign(
        tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
    self.moving_variance.assign(
        tf.cast(self.moving_variance, tf.float32) * momentum +
        variance * (1.0 - momentum))
    return tf.cast(y, self.compute_dtype)


def get_activation(name: Optional[str]):
  """Maps an activation name ('relu', 'gelu', 'none'/None, ...) to a function.

  'gelu' is the exact (erf) GeLU, as in deeplab2, written as 0.5·x·(1 + erf(x/√2)):
  TensorFlow's own exact GeLU goes through `erfc`, which has no vectorized CPU kernel
  and took twice as long (19 vs 9 ms on a 161×161×256 map; equal to 1e-6).
  """
  if name is None or name == "none":
    return lambda x: x
  if name == "gelu":
    return gelu
  return keras.activations.get(name)


_INV_SQRT2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@ops.custom_gradient
def _gelu(x):
  def grad(*args, upstream=None):
    if upstream is None:
      (upstream,) = args
    cdf = 0.5 * (1.0 + ops.erf(x * _INV_SQRT2))
    pdf = ops.exp(-0.5 * ops.square(x)) * _INV_SQRT_2PI
    return upstream * (cdf + x * pdf)

  return 0.5 * x * (1.0 + ops.erf(x * _INV_SQRT2)), grad


def gelu(x):
  """Exact GeLU, 0.5·x·(1 + erf(x/√2)).

  Its gradient, Φ(x) + x·φ(x), is computed from x alone: automatic differentiation
  of the expression keeps three more activation-sized tensors (x/√2, x/2,
  1 + erf) alive from the forward to the backward pass, for every GeLU of the
  decoder (0.23 GiB of the R50 COCO train step's peak RSS at 513x513, batch 1).
  bfloat16/float16 activations on TensorFlow take one fused XLA kernel instead
  (`fused_gelu`: 3.5x faster there).
  """
  if fused_gelu.applies(x):
    return fused_gelu.xla_gelu(x)
  return _gelu(x)
