"""ResNet-50 backbone as used by kMaX-DeepLab (deeplab2 `kmax_resnet50`).

Differences from the torchvision ResNet-50, following deeplab2's Axial-ResNet code:
  * no max pooling after the stem: the first block of *every* stage (res2 included)
    strides by 2, in its 3×3 convolution (and its 1×1 projection shortcut);
  * DeepLab padding for strided convolutions (see `layers/convolutions.py`), so an
    input of `32k + 1` pixels gives feature maps of `2^-s (32k) + 1` pixels exactly
    aligned with the input grid;
  * the last BN of each residual branch starts with γ = 0;
  * drop path with deeplab2's "linear" stage schedule, only on blocks working at
    stride ≥ `drop_path_beyond_stride` (16).
Two stems: "conv7" (7×7 stride-2 conv + BN, the kMaX R50) and "inception" (three 3×3
convs, 64-64-128 channels, used by MaX-S / `resnet_beta`).

The parameter count of the full network (23.51M trainable) matches deeplab2.
A tiny network for CPU tests: `ResNet(depths=(1, 1, 1, 1), width_multiplier=0.125,
stem_width_multiplier=0.25)`.

Outputs of `call(x, training)`: a dict with
  "stem"  — activated stem output, stride 2;
  "res2".."res5" — activated stage outputs, strides 4/8/16/32 (4·width channels);
  "stage1".."stage5" — the same features *before* the final activation (deeplab2's
  kMaX pixel decoder normalizes these; "stage1" is the raw stem output).
"""

import math
from typing import Any, Mapping, Optional, Sequence

import keras

from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import drop_path
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import policy_sharing
from deeplab2_kmax.layers import tracking


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class Bottleneck(keras.layers.Layer):
  """Residual bottleneck block 1×1 → 3×3 (strided) → 1×1, expansion 4.

  Args:
    filters: bottleneck width; the block outputs 4 × filters channels.
    strides: stride of the 3×3 conv and of the projection shortcut.
    drop_path_rate: drop probability of the residual branch.
    activation: 'relu' (ResNet) or 'gelu'.
    norm_config: see `layers.normalization.batch_norm`.
  `call` expects an activated input and returns the block output *before* the final
  activation (the caller activates it), like deeplab2 and `layers.AxialBlock`.
  """

  def __init__(self, filters: int, strides: int = 1, drop_path_rate: float = 0.0,
               activation: str = "relu",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.strides = strides
    self.drop_path_rate = drop_path_rate
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.conv1 = convolutions.ConvBN(filters, 1, activation=activation,
                                     norm_config=self.norm_config, name="conv1")
    self.conv2 = convolutions.ConvBN(filters, 3, strides=strides, activation=activation,
                                     norm_config=self.norm_config, name="conv2")
    self.conv3 = convolutions.ConvBN(4 * filters, 1, bn_gamma_initializer="zeros",
                                     norm_config=self.norm_config, name="conv3")
    self.drop = drop_path.DropPath(drop_path_rate, name="drop_path")
    self.shortcut = None

  def build(self, input_shape):
    if input_shape[-1] != 4 * self.filters:
      self.shortcut = convolutions.ConvBN(4 * self.filters, 1, strides=self.strides,
                                          norm_config=self.norm_config, name="shortcut")
      policy_sharing.share_dtype_policy(self)

  def residual_branch(self, x, training):
    x = self.conv1(x, training=training)
    x = self.conv2(x, training=training)
    return self.conv3(x, training=training)

  def call(self, x, training=False):
    if self.shortcut is not None:
      shortcut = self.shortcut(x, training=training)
    elif self.strides != 1:
      shortcut = x[:, ::self.strides, ::self.strides, :]
    else:
      shortcut = x
    return shortcut + self.drop(self.residual_branch(x, training), training=training)

  def get_config(self):
    config = super().get_config()
    config.update({"filters": self.filters, "strides": self.strides,
                   "drop_path_rate": self.drop_path_rate,
                   "activation": self.activation, "norm_config": self.norm_config})
    return config


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class InceptionStem(keras.layers.Layer):
  """Three 3×3 convs (stride 2, 1, 1) with 64, 64, 128 × width channels.

  The last conv has BN but no activation (the caller activates it), as in deeplab2.
  """

  def __init__(self, width_multiplier: float = 1.0, activation: str = "relu",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.width_multiplier = width_multiplier
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    width = int(64 * width_multiplier)
    self.conv1 = convolutions.ConvBN(width, 3, strides=2, activation=activation,
                                     norm_config=self.norm_config, name="conv1")
    self.conv2 = convolutions.ConvBN(width, 3, activation=activation,
                                     norm_config=self.norm_config, name="conv2")
    self.conv3 = convolutions.ConvBN(2 * width, 3, norm_config=self.norm_config,
                                     name="conv3")

  def call(self, x, training=False):
    x = self.conv1(x, training=training)
    x = self.conv2(x, training=training)
    return self.conv3(x, training=training)

  def get_config(self):
    config = super().get_config()
    config.update({"width_multiplier": self.width_multiplier,
                   "activation": self.activation, "norm_config": self.norm_config})
    return config


def linear_drop_path_rate(rate: float, current_stride: int, beyond_stride: int) -> float:
  """deeplab2's 'linear' drop-path schedule over the 4 ResNet stages.

  A block working at stride s (after its own striding for all but the first block of a
  stage) gets rate * (log2(s) - 1) / 4, and 0 below `beyond_stride`.
  """
  if beyond_stride <= 0 or current_stride < beyond_stride:
    return 0.0
  return rate * (math.log2(current_stride) - 1) / 4.0


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class ResNet(tracking.TrackListHeldLayers, keras.layers.Layer):
  """ResNet backbone with output stride 32.

  Args:
    depths: blocks per stage (res2..res5); (3, 4, 6, 3) is ResNet-50.
    width_multiplier: scales the bottleneck widths 64/128/256/512.
    stem_type: "conv7" (7×7 stride-2 conv) or "inception" (three 3×3 convs).
    stem_width_multiplier: scales the stem channels (64, or 64/64/128).
    activation: 'relu' or 'gelu'.
    drop_path_rate: drop rate of the last stage's blocks (0 = off); see
      `linear_drop_path_rate` for the schedule.
    drop_path_beyond_stride: blocks at strides below this never drop (16).
    norm_config: see `layers.normalization.batch_norm`.
  """

  # Stride of the "stage1"/"stem" endpoint (used by the five-stage pixel decoder).
  stage1_stride = 2

  def __init__(self, depths: Sequence[int] = (3, 4, 6, 3),
               width_multiplier: float = 1.0, stem_type: str = "conv7",
               stem_width_multiplier: float = 1.0, activation: str = "relu",
               drop_path_rate: float = 0.0, drop_path_beyond_stride: int = 16,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    if len(depths) != 4:
      raise ValueError(f"ResNet needs 4 stage depths, got {depths}")
    if stem_type not in ("conv7", "inception"):
      raise ValueError(f"Unknown stem_type {stem_type!r}; use 'conv7' or 'inception'")
    self.depths = tuple(int(d) for d in depths)
    self.width_multiplier = width_multiplier
    self.stem_type = stem_type
    self.stem_width_multiplier = stem_width_multiplier
    self.activation = activation
    self.drop_path_rate = drop_path_rate
    self.drop_path_beyond_stride = drop_path_beyond_stride
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self._act = normalization.get_activation(activation)

    if stem_type == "conv7":
      self.stem = convolutions.ConvBN(int(round(64 * stem_width_multiplier)), 7,
                                      strides=2, norm_config=self.norm_config,
                                      name="stem")
    else:
      self.stem = InceptionStem(stem_width_multiplier, activation=activation,
                                norm_config=self.norm_config, name="stem")
    self.stages = []
    for stage_index, depth in enumerate(self.depths):
      filters = int(round(64 * 2 ** stage_index * width_multiplier))
      input_stride = 2 ** (stage_index + 1)
      blocks = []
      for block_index in range(depth):
        strides = 2 if block_index == 0 else 1
        current_stride = input_stride if block_index == 0 else 2 * input_stride
        rate = linear_drop_path_rate(drop_path_rate, current_stride,
                                     drop_path_beyond_stride)
        blocks.append(self.make_block(
            filters, strides, current_stride, rate,
            name=f"res{stage_index + 2}_block{block_index + 1}"))
      self.stages.append(blocks)

  def make_block(self, filters: int, strides: int, current_stride: int,
                 drop_path_rate: float, name: str) -> keras.layers.Layer:
    """Builds one residual block; subclasses (axial ResNet) override this.

    The block takes activated features and returns un-activated ones.
    """
    del current_stride
    return Bottleneck(filters, strides=strides, drop_path_rate=drop_path_rate,
                      activation=self.activation, norm_config=self.norm_config,
                      name=name)

  def call(self, x, training=False):
    stem = self.stem(x, training=training)
    activated = self._act(stem)
    endpoints = {"stage1": stem, "stem": activated}
    for stage_index, blocks in enumerate(self.stages):
      for block in blocks:
        out = block(activated, training=training)
        activated = self._act(out)
      endpoints[f"stage{stage_index + 2}"] = out
      endpoints[f"res{stage_index + 2}"] = activated
    return endpoints

  def get_config(self):
    config = super().get_config()
    config.update({
        "depths": self.depths, "width_multiplier": self.width_multiplier,
        "stem_type": self.stem_type,
        "stem_width_multiplier": self.stem_width_multiplier,
        "activation": self.activation, "drop_path_rate": self.drop_path_rate,
        "drop_path_beyond_stride": self.drop_path_beyond_stride,
        "norm_config": self.norm_config,
    })
    return config
