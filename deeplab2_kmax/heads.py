"""kMaX-DeepLab prediction heads.

* `PixelHead`: stride-4 (or per-layer) pixel features → 5×5 depthwise-separable conv
  (256, BN, act) → 1×1 conv to the embedding dim (128, with bias) → BN → L2-normalize.
* mask head: 1×1 projection of the center mask embeddings to 128 + BN.
* class head: 1×1 projection with bias to num_classes + 1 (void last), init std 0.01,
  plus a constant prior bias making "void" have probability 0.9 at init.
* mask logits = einsum(pixel embeddings, mask embeddings), followed by a batch norm
  with a single scale/offset shared by all masks (γ starts at 0.1: a learned
  temperature).

`PredictionHead` combines them; every kMaX decoder layer owns one (its outputs are the
deep-supervision predictions and drive the k-means assignment) and one more produces
the final prediction.
"""

import math
from typing import Any, Mapping, Optional

import keras
from keras import ops

from deeplab2_kmax.core import output_keys
from deeplab2_kmax.kernels import bn_folding
from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import normalization


def l2_normalize(x, axis: int = -1, epsilon: float = 1e-12):
  """x / max(||x||, sqrt(epsilon)), like tf.math.l2_normalize."""
  squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
  return x * ops.rsqrt(ops.maximum(squared, epsilon))


def void_prior_bias(num_outputs: int, void_prior_prob: float = 0.9):
  """Bias vector (zeros, last entry log((K-1) p / (1-p))) giving P(void)=p at init."""
  bias = [0.0] * num_outputs
  bias[-1] = math.log((num_outputs - 1) * void_prior_prob / (1.0 - void_prior_prob))
  return bias


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class PixelHead(keras.layers.Layer):
  """Pixel embedding head: sep-conv 5×5 → 1×1 conv (+bias) → BN → L2 normalize.

  Args:
    hidden_channels: width of the depthwise-separable conv (256).
    embedding_dim: output embedding size D (128).
    kernel_size: depthwise kernel (5).
    activation: 'gelu'.
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, hidden_channels: int = 256, embedding_dim: int = 128,
               kernel_size: int = 5, activation: str = "gelu",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.hidden_channels = hidden_channels
    self.embedding_dim = embedding_dim
    self.kernel_size = kernel_size
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.conv = convolutions.DepthwiseSeparableConv(
        hidden_channels, kernel_size, activation=activation,
        norm_config=self.norm_config, name="conv")
    self.projection = keras.layers.Conv2D(
        embedding_dim, 1, use_bias=True,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        name="projection")
    self.bn = normalization.batch_norm(self.norm_config, name="bn")

  def build(self, input_shape):
    self.conv.build(tuple(input_shape))
    self.projection.build(tuple(input_shape[:-1]) + (self.hidden_channels,))
    self.bn.build(tuple(input_shape[:-1]) + (self.embedding_dim,))

  def call(self, x, training=False):
    x = self.conv(x, training=training)
    y = bn_folding.linear_bn(self.projection, self.bn, x, training)  # folded inference
    if y is None:
      y = self.bn(self.projection(x), training=training)
    return l2_normalize(y)

  def get_config(self):
    config = super().get_config()
    config.update({"hidden_channels": self.hidden_channels,
                   "embedding_dim": self.embedding_dim,
                   "kernel_size": self.kernel_size, "activation": self.activation,
                   "norm_config": self.norm_config})
    return config


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class PredictionHead(keras.layers.Layer):
  """Pixel head + mask head + class head + mask logits.

  Call with (pixel_features [B, H, W, Cp], class_features [B, N, Cc],
  mask_features [B, N, Cm]); returns a dict with "class_logits" [B, N, C+1],
  "mask_logits" [B, H, W, N] and "pixel_embeddings" [B, H, W, D].

  Args:
    num_classes: C real classes (the class head has C + 1 outputs, void last).
    embedding_dim: D (128).
    pixel_head_channels: hidden width of the pixel head (256).
    void_prior_prob: P(void) at init (0.9).
    activation: 'gelu'.
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, num_classes: int, embedding_dim: int = 128,
               pixel_head_channels: int = 256, void_prior_prob: float = 0.9,
               activation: str = "gelu",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.embedding_dim = embedding_dim
    self.pixel_head_channels = pixel_head_channels
    self.void_prior_prob = void_prior_prob
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.pixel_head = PixelHead(pixel_head_channels, embedding_dim,
                                activation=activation,
                                norm_config=self.norm_config, name="pixel_head")
    self.mask_head = convolutions.DenseBN(embedding_dim,
                                          norm_config=self.norm_config,
                                          name="mask_head")
    self.class_head = keras.layers.Dense(
        num_classes + 1, use_bias=True,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        name="class_head")
    # One scale/offset for all masks: BN over a trailing singleton axis.
    self.mask_logits_bn = normalization.batch_norm(
        self.norm_config, gamma_initializer=keras.initializers.Constant(0.1),
        name="mask_logits_bn")
    self._void_bias = void_prior_bias(num_classes + 1, void_prior_prob)

  def build(self, input_shape):
    self.mask_logits_bn.build((None, None, None, None, 1))

  def call(self, pixel_features, class_features, mask_features, training=False):
    pixel_embeddings = self.pixel_head(pixel_features, training=training)
    mask_embeddings = self.mask_head(mask_features, training=training)
    mask_logits = bn_folding.scaled_mask_logits(  # folded at inference
        self.mask_logits_bn, pixel_embeddings, mask_embeddings, training)
    if mask_logits is None:
      mask_logits = ops.einsum("bhwd,bnd->bhwn", pixel_embeddings, mask_embeddings)
      mask_logits = self.mask_logits_bn(mask_logits[..., None],
                                        training=training)[..., 0]
    class_logits = self.class_head(class_features)
    class_logits = class_logits + ops.convert_to_tensor(self._void_bias,
                                                        class_logits.dtype)
    return {output_keys.CLASS_LOGITS: class_logits, output_keys.MASK_LOGITS: mask_logits,
            output_keys.PIXEL_EMBEDDINGS: pixel_embeddings}

  def get_config(self):
    config = super().get_config()
    config.update({"num_classes": self.num_classes,
                   "embedding_dim": self.embedding_dim,
                   "pixel_head_channels": self.pixel_head_channels,
                   "void_prior_prob": self.void_prior_prob,
                   "activation": self.activation, "norm_config": self.norm_config})
    return config
