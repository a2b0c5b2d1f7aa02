"""kMaX pixel decoder: axial blocks at strides 32/16, bottlenecks at 8/4 (and 2).

    x = LN(res5) → stage 0 (1 axial block, w=512, out 2048)            stride 32
      → fuse(res4) → stage 1 (5 axial blocks, w=256, out 1024)        stride 16
      → fuse(res3) → stage 2 (1 bottleneck, w=128, out 512)           stride 8
      → fuse(res2) → stage 3 (1 bottleneck, w=64, out 256)            stride 4
     [→ fuse(stem) → stage 4 (1 bottleneck, w=32, out 128)            stride 2]

The bottlenecks' 3×3 convs are atrous with rate 2, as in deeplab2 (see
`bottleneck_dilation_rate`).

Every backbone endpoint first goes through a LayerNorm (eps 1e-6). A skip fusion maps
both the previous stage output and the normalized endpoint to the next width
`dims[i+1]` (activation → 1×1 conv + BN, skipped when the width already matches),
resizes the former with align-corners bilinear interpolation to the endpoint's size
and sums them. Stage outputs are un-activated (consumers activate them).

Endpoints (deeplab2 `model/pixel_decoder/kmax.py`): the decoder normalizes the
backbone's *pre-activation* features "stage5".."stage2" (and "stage1" for the fifth
stage); backbone layers that only return the activated "res2".."res5" are accepted and
used instead (a documented fallback, see `select_endpoint`: same shapes, so same
parameters; only the missing activation differs).

The optional fifth stage (Cityscapes) fuses "stage1" (or "stem") at *that feature's*
resolution, as deeplab2 does: stride 2 for the ResNets (stem output), but stride 4 for
ConvNeXt, whose "stage1" is its stride-4 patchify stem, so there the fifth stage runs at
stride 4 (see `finest_stride`). Without any stage1/stem endpoint, the stride-4 output is
upsampled to 2 * h4 - 1 (the exact stride-2 grid of `32k + 1` crops) and used alone.
"""

from typing import Any, Mapping, Optional, Sequence

import keras
from keras import ops

from deeplab2_kmax.layers import axial_attention
from deeplab2_kmax.layers import bottleneck
from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import policy_sharing
from deeplab2_kmax.layers import resize
from deeplab2_kmax.layers import tracking

ENDPOINTS = ("res5", "res4", "res3", "res2", "stem")


def select_endpoint(endpoints, index: int):
  """Backbone feature for decoder stage `index` (0 = stride 32), or None.

  Prefers the un-activated "stage{k}" features (what deeplab2's kMaX pixel decoder
  normalizes) and falls back to the activated "res{k}" (backbones that only return
  res2..res5). The fifth stage (index 4) uses "stage1", else "stem", else None.
  """
  if index < 4:
    level = 5 - index
    return endpoints.get(f"stage{level}", endpoints.get(f"res{level}"))
  if "stage1" in endpoints:
    return endpoints["stage1"]
  return endpoints.get("stem")


def finest_stride(num_stages: int, backbone=None) -> int:
  """Output stride of the decoder's last stage for a given backbone.

  4 for the four-stage decoder. With five stages: the stride of the backbone's
  "stage1" feature (the `stage1_stride` attribute of our backbones: 2 for the
  ResNets, 4 for ConvNeXt, as in deeplab2); 2 for backbones without that attribute
  (their "stem"/"stage1" must then be at stride 2, or absent: upsampled fallback).
  """
  if num_stages == 4:
    return 4
  return int(getattr(backbone, "stage1_stride", 2))


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class ResizedFuse(keras.layers.Layer):
  """act → 1×1 conv+BN to `channels` (if needed) → align-corners resize → sum.

  Call with (decoder_feature, skip_feature); the output has skip_feature's size (or
  `output_size` when skip_feature is None) and `channels` channels.
  """

  def __init__(self, channels: int, activation: str = "gelu",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.channels = channels
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self._act = normalization.get_activation(activation)
    self.decoder_conv = None
    self.skip_conv = None

  def build(self, decoder_feature_shape, skip_feature_shape=None):
    if decoder_feature_shape[-1] != self.channels:
      self.decoder_conv = convolutions.ConvBN(self.channels, 1,
                                              norm_config=self.norm_config,
                                              name="decoder_conv")
      policy_sharing.share_dtype_policy(self)
      self.decoder_conv.build(tuple(decoder_feature_shape))
    if skip_feature_shape is not None and skip_feature_shape[-1] != self.channels:
      self.skip_conv = convolutions.ConvBN(self.channels, 1,
                                           norm_config=self.norm_config,
                                           name="skip_conv")
      policy_sharing.share_dtype_policy(self)
      self.skip_conv.build(tuple(skip_feature_shape))

  def call(self, decoder_feature, skip_feature=None, output_size=None,
           training=False):
    x = decoder_feature
    if self.decoder_conv is not None:
      x = self.decoder_conv(self._act(x), training=training)
    if skip_feature is None:
      return resize.resize_align_corners(x, output_size)
    shape = ops.shape(skip_feature)
    x = resize.resize_align_corners(x, (shape[1], shape[2]))
    if self.skip_conv is not None:
      skip_feature = self.skip_conv(self._act(skip_feature), training=training)
    return x + skip_feature

  def get_config(self):
    config = super().get_config()
    config.update({"channels": self.channels, "activation": self.activation,
                   "norm_config": self.norm_config})
    return config


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class KMaXPixelDecoder(tracking.TrackListHeldLayers, keras.layers.Layer):
  """The kMaX pixel decoder.

  Call with the backbone endpoint dict ("stage2".."stage5" or "res2".."res5",
  optionally "stem"/"stage1"; see `select_endpoint`). Returns
  the list of stage outputs from stride 32 to the finest stride (4, or 2 with five
  stages); stage outputs have 4 * dims[i] channels.

  Args:
    dims: bottleneck widths per stage, stride 32 first ((512, 256, 128, 64); add 32
      for the Cityscapes stride-2 stage).
    num_blocks: blocks per stage ((1, 5, 1, 1[, 1])).
    block_types: 'axial' or 'bottleneck' per stage.
    num_heads: axial-attention heads (8).
    max_span: axial relative-position span (255 → tables of 509).
    activation: 'gelu'.
    layer_norm_epsilon: epsilon of the endpoint LayerNorms (1e-6).
    drop_path_rate: drop path inside the decoder blocks (deeplab2: 0).
    bottleneck_dilation_rate: atrous rate of the bottleneck blocks' 3×3 convs. deeplab2
      builds the decoder stages as ResNet block groups whose nominal input stride (32)
      exceeds their output stride (16), which makes those convs atrous with rate 2;
      its released checkpoints were trained so, hence the default 2.
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, dims: Sequence[int] = (512, 256, 128, 64),
               num_blocks: Sequence[int] = (1, 5, 1, 1),
               block_types: Sequence[str] = ("axial", "axial", "bottleneck",
                                             "bottleneck"),
               num_heads: int = 8, max_span: int = 255, activation: str = "gelu",
               layer_norm_epsilon: float = 1e-6, drop_path_rate: float = 0.0,
               bottleneck_dilation_rate: int = 2,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.dims = tuple(int(d) for d in dims)
    self.num_blocks = tuple(int(n) for n in num_blocks)
    self.block_types = tuple(block_types)
    if not len(self.dims) == len(self.num_blocks) == len(self.block_types):
      raise ValueError("dims, num_blocks and block_types must have equal lengths")
    if len(self.dims) not in (4, 5):
      raise ValueError(f"The pixel decoder has 4 or 5 stages, got {len(self.dims)}")
    self.num_heads = num_heads
    self.max_span = max_span
    self.activation = activation
    self.layer_norm_epsilon = layer_norm_epsilon
    self.drop_path_rate = drop_path_rate
    self.bottleneck_dilation_rate = int(bottleneck_dilation_rate)
    self.norm_config = normalization.resolve_norm_config(norm_config)
    nc = self.norm_config
    self.endpoint_norms = [
        keras.layers.LayerNormalization(epsilon=layer_norm_epsilon,
                                        name=f"{ENDPOINTS[i]}_norm")
        for i in range(len(self.dims))]
    self.stages = []
    for i, (width, count, kind) in enumerate(
        zip(self.dims, self.num_blocks, self.block_types)):
      blocks = []
      for j in range(count):
        if kind == "axial":
          blocks.append(axial_attention.AxialBlock(
              width, num_heads=num_heads, max_span=max_span, activation=activation,
              drop_path_rate=drop_path_rate, norm_config=nc,
              name=f"stage{i}_axial{j}"))
        elif kind == "bottleneck":
          blocks.append(bottleneck.BottleneckBlock(
              width, dilation_rate=self.bottleneck_dilation_rate,
              activation=activation, drop_path_rate=drop_path_rate,
              norm_config=nc, name=f"stage{i}_bottleneck{j}"))
        else:
          raise ValueError(f"Unknown block type {kind!r} (use 'axial' or "
                           "'bottleneck')")
      self.stages.append(blocks)
    self.fusions = [ResizedFuse(self.dims[i + 1], activation=activation,
                                norm_config=nc, name=f"fuse{i}")
                    for i in range(len(self.dims) - 1)]

  def build(self, input_shape):
    pass

  def call(self, endpoints, training=False):
    missing = [k for i, k in enumerate(ENDPOINTS[:4])
               if select_endpoint(endpoints, i) is None]
    if missing:
      raise ValueError(f"Backbone endpoints {missing} missing; got "
                       f"{sorted(endpoints)}")
    x = self.endpoint_norms[0](select_endpoint(endpoints, 0))
    outputs = []
    for i, blocks in enumerate(self.stages):
      if i > 0:
        skip = select_endpoint(endpoints, i)
        if skip is not None:
          skip = self.endpoint_norms[i](skip)
          x = self.fusions[i - 1](x, skip, training=training)
        else:  # stride-2 stage without a stem endpoint
          shape = ops.shape(x)
          x = self.fusions[i - 1](x, None, output_size=(2 * shape[1] - 1,
                                                        2 * shape[2] - 1),
                                  training=training)
      for block in blocks:
        x = block(x, training=training)
      outputs.append(x)
    return outputs

  def get_config(self):
    config = super().get_config()
    config.update({
        "dims": self.dims, "num_blocks": self.num_blocks,
        "block_types": self.block_types, "num_heads": self.num_heads,
        "max_span": self.max_span, "activation": self.activation,
        "layer_norm_epsilon": self.layer_norm_epsilon,
        "drop_path_rate": self.drop_path_rate,
        "bottleneck_dilation_rate": self.bottleneck_dilation_rate,
        "norm_config": self.norm_config,
    })
    return config
