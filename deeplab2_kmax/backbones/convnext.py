"""ConvNeXt backbone (Liu et al., "A ConvNet for the 2020s", CVPR 2022).

As used by kMaX-DeepLab (deeplab2 `pixel_encoder/convnext.py`):
  * patchify stem (4×4 conv stride 4 + LayerNorm), then 4 stages; between stages a
    LayerNorm + 2×2 conv stride 2;
  * block: 7×7 depthwise conv → LayerNorm → Dense 4d → GeLU (exact) → Dense d →
    layer scale (init 1e-6) → drop path → residual;
  * drop-path rates grow linearly from 0 to `drop_path_rate` over all blocks;
  * zero padding for downstream use ((1, 2) before the stem, (0, 1) before each
    downsampling) so that any input size works and a `32k + 1` input gives
    feature maps of `2^-s (32k) + 1` pixels;
  * LayerNorm epsilon 1e-6, kernels truncated-normal(0.02), zero biases.

Presets (`CONVNEXT_PRESETS`): tiny/small/base/large with depths (3,3,9,3)/(3,3,27,3)×3
and dims 96/96/128/192 × (1, 2, 4, 8): 27.82M / 49.45M / 87.56M / 196.23M params.
A tiny network for CPU tests: `ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))`.

Outputs of `call(x, training)`: a dict with
  "res2".."res5" — GeLU-activated stage outputs, strides 4/8/16/32 (dims channels);
  "stage2".."stage5" — the same before the GeLU (what deeplab2's kMaX pixel decoder
  normalizes);
  "stage1" — the stem output, at stride 4 (ConvNeXt has no stride-2 feature, so no
  "stem" key).
"""

from typing import Sequence

import keras
from keras import ops

from deeplab2_kmax.kernels import depthwise as depthwise_kernels
from deeplab2_kmax.layers import drop_path
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import tracking

CONVNEXT_PRESETS = {
    "convnext_tiny": {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768)},
    "convnext_small": {"depths": (3, 3, 27, 3), "dims": (96, 192, 384, 768)},
    "convnext_base": {"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024)},
    "convnext_large": {"depths": (3, 3, 27, 3), "dims": (192, 384, 768, 1536)},
}


def _trunc_normal():
  return keras.initializers.TruncatedNormal(stddev=0.02)


def _layer_norm(name):
  return keras.layers.LayerNormalization(epsilon=1e-6, name=name)


def _gelu(x):
  return normalization.gelu(x)


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class ConvNeXtBlock(keras.layers.Layer):
  """One ConvNeXt block (see module docstring).

  Args:
    dim: channels.
    drop_path_rate: drop probability of the residual branch.
    layer_scale_init_value: initial layer scale; 0 disables layer scale.
  """

  def __init__(self, dim: int, drop_path_rate: float = 0.0,
               layer_scale_init_value: float = 1e-6, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim
    self.drop_path_rate = drop_path_rate
    self.layer_scale_init_value = layer_scale_init_value
    self.depthwise_conv = keras.layers.DepthwiseConv2D(
        7, padding="same", depthwise_initializer=_trunc_normal(),
        bias_initializer="zeros", name="depthwise_conv")
    self.norm = _layer_norm("norm")
    self.pointwise_conv1 = keras.layers.Dense(
        4 * dim, kernel_initializer=_trunc_normal(), name="pointwise_conv1")
    self.pointwise_conv2 = keras.layers.Dense(
        dim, kernel_initializer=_trunc_normal(), name="pointwise_conv2")
    self.drop = drop_path.DropPath(drop_path_rate, name="drop_path")
    self.gamma = None

  def build(self, input_shape):
    # The fast depthwise paths in `call` read the kernel directly, so every sub-layer
    # is built here rather than on its first call.
    shape = (input_shape[0], None, None, self.dim)
    self.depthwise_conv.build(shape)
    self.norm.build(shape)
    self.pointwise_conv1.build(shape)
    self.pointwise_conv2.build(shape[:-1] + (4 * self.dim,))
    if self.layer_scale_init_value > 0:
      self.gamma = self.add_weight(
          name="layer_scale", shape=(self.dim,),
          initializer=keras.initializers.Constant(self.layer_scale_init_value))

  def call(self, x, training=False):
    # A fast form (shifted slices under XLA, the one-conv kernel gradient in training;
    # kernels.depthwise) when one applies.
    y = depthwise_kernels.depthwise_bn(self.depthwise_conv, None, x, training)
    if y is None:
      y = self.depthwise_conv(x)
    y = self.norm(y)
    y = self.pointwise_conv1(y)
    y = _gelu(y)
    y = self.pointwise_conv2(y)
    if self.gamma is not None:
      y = y * self.gamma
    return x + self.drop(y, training=training)

  def get_config(self):
    config = super().get_config()
    config.update({"dim": self.dim, "drop_path_rate": self.drop_path_rate,
                   "layer_scale_init_value": self.layer_scale_init_value})
    return config


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class ConvNeXt(tracking.TrackListHeldLayers, keras.layers.Layer):
  """ConvNeXt backbone with output stride 32.

  Args:
    depths: blocks per stage.
    dims: channels per stage.
    drop_path_rate: drop rate of the last block (linear from 0 over all blocks).
    layer_scale_init_value: initial layer-scale value (1e-6; 0 disables it).
    zero_padding_for_downstream: pad before the strided convs (see module docstring).
  """

  # "stage1" is the stride-4 patchify stem: deeplab2's five-stage (Cityscapes) pixel
  # decoder fuses it at stride 4, so that decoder's output stride is 4 here.
  stage1_stride = 4

  def __init__(self, depths: Sequence[int] = (3, 3, 9, 3),
               dims: Sequence[int] = (96, 192, 384, 768),
               drop_path_rate: float = 0.0, layer_scale_init_value: float = 1e-6,
               zero_padding_for_downstream: bool = True, **kwargs):
    super().__init__(**kwargs)
    if len(depths) != 4 or len(dims) != 4:
      raise ValueError(f"ConvNeXt needs 4 depths and 4 dims, got {depths}, {dims}")
    self.depths = tuple(int(d) for d in depths)
    self.dims = tuple(int(d) for d in dims)
    self.drop_path_rate = drop_path_rate
    self.layer_scale_init_value = layer_scale_init_value
    self.zero_padding_for_downstream = zero_padding_for_downstream

    self.stem_conv = keras.layers.Conv2D(
        self.dims[0], 4, strides=4, kernel_initializer=_trunc_normal(),
        name="stem_conv")
    self.stem_norm = _layer_norm("stem_norm")
    self.downsample_norms = []
    self.downsample_convs = []
    for i in range(1, 4):
      self.downsample_norms.append(_layer_norm(f"downsample{i}_norm"))
      self.downsample_convs.append(keras.layers.Conv2D(
          self.dims[i], 2, strides=2, kernel_initializer=_trunc_normal(),
          name=f"downsample{i}_conv"))
    total = sum(self.depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    self.stages = []
    index = 0
    for i, depth in enumerate(self.depths):
      self.stages.append([
          ConvNeXtBlock(self.dims[i], drop_path_rate=rates[index + j],
                        layer_scale_init_value=layer_scale_init_value,
                        name=f"stage{i + 2}_block{j + 1}")
          for j in range(depth)])
      index += depth

  def _pad(self, x, before, after):
    if not self.zero_padding_for_downstream:
      return x
    return ops.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])

  def call(self, x, training=False):
    x = self.stem_norm(self.stem_conv(self._pad(x, 1, 2)))
    endpoints = {"stage1": x}
    for i, blocks in enumerate(self.stages):
      if i > 0:
        # deeplab2 pads before the norm, so padded pixels become LayerNorm's β.
        x = self.downsample_norms[i - 1](self._pad(x, 0, 1))
        x = self.downsample_convs[i - 1](x)
      for block in blocks:
        x = block(x, training=training)
      endpoints[f"stage{i + 2}"] = x
      endpoints[f"res{i + 2}"] = _gelu(x)
    return endpoints

  def get_config(self):
    config = super().get_config()
    config.update({
        "depths": self.depths, "dims": self.dims,
        "drop_path_rate": self.drop_path_rate,
        "layer_scale_init_value": self.layer_scale_init_value,
        "zero_padding_for_downstream": self.zero_padding_for_downstream,
    })
    return config
