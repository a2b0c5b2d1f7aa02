"""Training-only auxiliary semantic decoder + head (Panoptic-DeepLab style).

Input endpoints as deeplab2 (`feature_semantic` = the backbone's pre-activation
"stage5"; low-level features "res3"/"res2", activated): the stride-32 feature is "stage5"
when the backbone returns it, else "res5" (backbones with res2..res5 only).

COCO variant (`use_decoder=True`): ASPP on stage5 (1×1, three 3×3 atrous convs with
rates 6/12/18, image pooling; 256 channels each; 1×1 projection; dropout 0.1), then
twice: upsample (align corners) to the next low-level feature, concatenate with its
1×1 projection (res3 → 64, res2 → 32) and fuse with a 5×5 depthwise-separable conv
(256). Head: 5×5 depthwise-separable conv (256) → 1×1 conv to num_classes.

Cityscapes variant (`use_decoder=False`): the head sits directly on stage5; its logits
are upsampled (align corners) to the res2 (stride-4) grid so the output contract is
the same.

This branch supervises the backbone only; the model skips it at inference and its
parameters are excluded from the paper's counts.
"""

from typing import Any, Mapping, Optional, Sequence

import keras
from keras import ops

from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import resize
from deeplab2_kmax.layers import tracking


def semantic_feature(endpoints):
  """deeplab2's `feature_semantic`: pre-activation "stage5", else "res5"."""
  if "stage5" in endpoints:
    return endpoints["stage5"]
  return endpoints["res5"]


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class ASPP(tracking.TrackListHeldLayers, keras.layers.Layer):
  """Atrous spatial pyramid pooling with global image pooling.

  Args:
    channels: width of every branch and of the output (256).
    atrous_rates: three rates (6, 12, 18).
    dropout_rate: dropout after the projection (0.1).
    activation: 'gelu'.
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, channels: int = 256, atrous_rates: Sequence[int] = (6, 12, 18),
               dropout_rate: float = 0.1, activation: str = "gelu",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    if len(atrous_rates) != 3:
      raise ValueError(f"ASPP needs three atrous rates, got {atrous_rates}")
    self.channels = channels
    self.atrous_rates = tuple(int(r) for r in atrous_rates)
    self.dropout_rate = dropout_rate
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    nc = self.norm_config
    self.conv1x1 = convolutions.ConvBN(channels, 1, activation=activation,
                                       norm_config=nc, name="conv1x1")
    self.atrous_convs = [
        convolutions.ConvBN(channels, 3, dilation_rate=rate, activation=activation,
                            norm_config=nc, name=f"atrous{rate}")
        for rate in self.atrous_rates]
    self.pool_conv = convolutions.ConvBN(channels, 1, activation=activation,
                                         norm_config=nc, name="pool_conv")
    self.projection = convolutions.ConvBN(channels, 1, activation=activation,
                                          norm_config=nc, name="projection")
    self.dropout = keras.layers.Dropout(dropout_rate)

  def call(self, x, training=False):
    shape = ops.shape(x)
    branches = [self.conv1x1(x, training=training)]
    branches += [conv(x, training=training) for conv in self.atrous_convs]
    pooled = self.pool_conv(ops.mean(x, axis=(1, 2), keepdims=True),
                            training=training)
    branches.append(ops.broadcast_to(pooled, (shape[0], shape[1], shape[2],
                                              self.channels)))
    y = self.projection(ops.concatenate(branches, axis=-1), training=training)
    return self.dropout(y, training=training)

  def get_config(self):
    config = super().get_config()
    config.update({"channels": self.channels, "atrous_rates": self.atrous_rates,
                   "dropout_rate": self.dropout_rate, "activation": self.activation,
                   "norm_config": self.norm_config})
    return config


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class SemanticDecoder(tracking.TrackListHeldLayers, keras.layers.Layer):
  """Auxiliary semantic decoder + head; returns logits [B, h(res2), w(res2), C].

  Args:
    num_classes: C output channels.
    use_decoder: True for the COCO decoder (ASPP + res3/res2 fusion), False for the
      Cityscapes head directly on res5.
    aspp_channels: ASPP width (256).
    atrous_rates: ASPP rates (6, 12, 18).
    decoder_channels: fusion width (256).
    low_level_channels: projections of res3 and res2 ((64, 32)).
    head_channels: width of the head's separable conv (256).
    activation: 'gelu'.
    norm_config: see `normalization.batch_norm`.
  """

  LOW_LEVEL = ("res3", "res2")

  def __init__(self, num_classes: int, use_decoder: bool = True,
               aspp_channels: int = 256, atrous_rates: Sequence[int] = (6, 12, 18),
               decoder_channels: int = 256,
               low_level_channels: Sequence[int] = (64, 32),
               head_channels: int = 256, activation: str = "gelu",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.use_decoder = use_decoder
    self.aspp_channels = aspp_channels
    self.atrous_rates = tuple(int(r) for r in atrous_rates)
    self.decoder_channels = decoder_channels
    self.low_level_channels = tuple(int(c) for c in low_level_channels)
    self.head_channels = head_channels
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    nc = self.norm_config
    if use_decoder:
      self.aspp = ASPP(aspp_channels, self.atrous_rates, activation=activation,
                       norm_config=nc, name="aspp")
      self.low_level_projections = [
          convolutions.ConvBN(c, 1, activation=activation, norm_config=nc,
                              name=f"{name}_projection")
          for name, c in zip(self.LOW_LEVEL, self.low_level_channels)]
      self.fusions = [
          convolutions.DepthwiseSeparableConv(decoder_channels, 5,
                                              activation=activation,
                                              norm_config=nc, name=f"{name}_fuse")
          for name in self.LOW_LEVEL]
    self.head_conv = convolutions.DepthwiseSeparableConv(
        head_channels, 5, activation=activation, norm_config=nc, name="head_conv")
    self.classifier = keras.layers.Conv2D(
        num_classes, 1, use_bias=True,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        name="classifier")

  def build(self, input_shape):
    pass

  def call(self, endpoints, training=False):
    target = ops.shape(endpoints["res2"])
    top = semantic_feature(endpoints)
    if self.use_decoder:
      x = self.aspp(top, training=training)
      for name, proj, fuse in zip(self.LOW_LEVEL, self.low_level_projections,
                                  self.fusions):
        low = proj(endpoints[name], training=training)
        low_shape = ops.shape(low)
        x = resize.resize_align_corners(x, (low_shape[1], low_shape[2]))
        x = fuse(ops.concatenate([x, low], axis=-1), training=training)
    else:
      x = top
    logits = self.classifier(self.head_conv(x, training=training))
    if not self.use_decoder:
      logits = resize.resize_align_corners(logits, (target[1], target[2]))
    return logits

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes, "use_decoder": self.use_decoder,
        "aspp_channels": self.aspp_channels, "atrous_rates": self.atrous_rates,
        "decoder_channels": self.decoder_channels,
        "low_level_channels": self.low_level_channels,
        "head_channels": self.head_channels, "activation": self.activation,
        "norm_config": self.norm_config,
    })
    return config
