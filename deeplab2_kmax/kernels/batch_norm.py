"""Training-mode batch norm through TensorFlow's fused kernel.

Keras 3 computes a training BN as moments + elementwise ops, whose backward is a dozen
elementwise passes over every activation and keeps several activation-sized
intermediates alive until the backward; TF's FusedBatchNormV3 (what tf.keras 2 and
deeplab2 used) does the forward in one kernel and its gradient in another, saving only
the batch mean and inverse standard deviation. Same variables, outputs, gradients and
moving-statistics updates as the Keras layer. Only for the TensorFlow backend without
synchronization; anything else (synchronized BN, masks, renorm, no scale/center, JAX)
keeps the Keras path.
"""

from deeplab2_kmax.kernels import policy


def applies(layer, inputs, training, mask) -> bool:
  return (policy.enabled() and bool(training) and layer.trainable and mask is None
          and not layer.synchronized and not layer.renorm
          and layer.scale and layer.center
          and policy.backend() == "tensorflow"
          and inputs.shape.rank is not None and inputs.shape.rank >= 2
          and layer.axis in (1, inputs.shape.rank - 1, -1))


def fused_training_batch_norm(layer, inputs, training, mask=None):
  """`layer(inputs, training)` for a keras BatchNormalization in training mode by TF's
  fused kernel (moving statistics updated as Keras does), or None."""
  if not applies(layer, inputs, training, mask):
    return None
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rank = inputs.shape.rank
  # Statistics in float32 as Keras; the fused op takes bf16/f16 activations itself
  # (float32 scale/offset/statistics, output in the input dtype): bit-identical to
  # casting to float32 and back, without the two casts per BN and per backward.
  x = (inputs if inputs.dtype in (tf.bfloat16, tf.float16, tf.float32)
       else tf.cast(inputs, tf.float32))
  axis = layer.axis % rank
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
      x4, tf.cast(layer.gamma, tf.float32), tf.cast(layer.beta, tf.float32),
      epsilon=layer.epsilon, data_format=data_format, is_training=True)
  if rank != 4:
    y = tf.reshape(y, tf.shape(x))
    if axis != rank - 1:
      y = tf.experimental.numpy.moveaxis(y, -1, axis)
  # The op returns the Bessel-corrected variance; Keras (and the normalization itself)
  # uses the biased one for the moving variance.
  count = tf.cast(tf.size(x4) // tf.shape(x4)[3 if data_format == "NHWC" else 1],
                  tf.float32)
  variance = unbiased_variance * tf.math.divide_no_nan(count - 1.0, count)
  variance = tf.where(count > 1.0, variance, unbiased_variance * 0.0)
  momentum = layer.momentum
  layer.moving_mean.assign(
      tf.cast(layer.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
  layer.moving_variance.assign(
      tf.cast(layer.moving_variance, tf.float32) * momentum + variance * (1.0 - momentum))
  return tf.cast(y, layer.compute_dtype)
