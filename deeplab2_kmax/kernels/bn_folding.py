"""Batch-norm folding: inference-time BN as a per-channel affine map folded into weights.

With its moving statistics, a batch norm is the affine map x·scale + shift per channel
(scale = γ / √(σ² + ε), shift = β − μ·scale). Folding `scale` into the kernel of the
preceding linear op (conv, depthwise conv, dense, einsum projection) and adding `shift`
as a bias replaces two full passes over the activation (Keras 3's BN multiplies and adds
separately, and oneDNN cannot fuse either into the conv) by one bias add that Grappler
fuses into the convolution. The folded kernel is recomputed from the variables on every
call (a few small ops), so training, checkpoints and the variables are unchanged; only
inference (moving statistics) is folded: a BN that uses batch statistics (training and
trainable) returns None here and the caller runs the ordinary layer.

Measured on the R50 COCO model at 641×641 (graph mode, 2 cores): see
`benchmarks/model_forward.py`; numerics equal the unfolded layers to float rounding.
"""

from typing import Optional, Tuple

from keras import ops

from deeplab2_kmax.kernels import policy


def uses_batch_statistics(bn, training) -> bool:
  """Whether `bn(x, training=training)` normalizes with the batch's own statistics.

  Mirrors keras.layers.BatchNormalization.call: `training and self.trainable`.
  """
  return bool(training) and bn.trainable


def folded_affine(bn, training, dtype="float32") -> Optional[Tuple[object, object]]:
  """(scale, shift) with bn(x, training) == x·scale + shift, or None.

  Returns None when there is no BN (`bn` is None) or it uses batch statistics (see
  `uses_batch_statistics`). Both are vectors over the BN's channel axis, cast to
  `dtype`.
  """
  if bn is None or uses_batch_statistics(bn, training):
    return None
  variance = ops.cast(bn.moving_variance, "float32")
  mean = ops.cast(bn.moving_mean, "float32")
  scale = ops.rsqrt(variance + bn.epsilon)
  if bn.scale:
    scale = scale * ops.cast(bn.gamma, "float32")
  shift = -mean * scale
  if bn.center:
    shift = shift + ops.cast(bn.beta, "float32")
  return ops.cast(scale, dtype), ops.cast(shift, dtype)


def folded_scale(bn, training, dtype="float32"):
  """The `scale` of `folded_affine`, or None (for BNs whose shift can be dropped,
  e.g. per-head similarity BNs followed by a softmax over the other axes)."""
  affine = folded_affine(bn, training, dtype)
  return None if affine is None else affine[0]


def linear_bn(linear, bn, x, training):
  """`bn(linear(x))` with the BN folded into the kernel and bias, or None.

  `linear` is a built keras Dense (any rank) or Conv2D (its own convolution_op); its
  bias, if any, is folded too. None when fast paths are off or the BN uses batch
  statistics (the caller runs the plain layers).
  """
  if not policy.enabled():
    return None
  affine = folded_affine(bn, training, x.dtype)
  if affine is None:
    return None
  scale, shift = affine
  kernel = ops.cast(linear.kernel, x.dtype) * scale
  if getattr(linear, "use_bias", False):
    shift = ops.cast(linear.bias, x.dtype) * scale + shift
  if hasattr(linear, "convolution_op"):
    return linear.convolution_op(x, kernel) + shift
  return ops.matmul(x, kernel) + shift


def scaled_mask_logits(bn, pixel_embeddings, mask_embeddings, training):
  """einsum("bhwd,bnd->bhwn") followed by a one-channel BN over a trailing axis, with
  the BN's single scale folded into the mask embeddings; or None."""
  if not policy.enabled():
    return None
  affine = folded_affine(bn, training, mask_embeddings.dtype)
  if affine is None:
    return None
  return ops.einsum("bhwd,bnd->bhwn", pixel_embeddings,
                    mask_embeddings * affine[0]) + affine[1]
