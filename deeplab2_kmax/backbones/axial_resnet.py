"""Axial-ResNet-50 = MaX-S backbone (deeplab2 `kmax_axial_resnet50`, "MaX-S w/ GeLU").

A ResNet-50 (`resnet.ResNet`) with
  * the inception stem (three 3×3 convs, 64-64-128 channels),
  * GeLU activations,
  * every residual block that works at stride ≥ `axial_beyond_stride` (16) replaced by
    an axial-attention block (`layers.axial_attention.AxialBlock`): 1×1 conv to
    2·w → height-axis then width-axis multi-head attention (8 heads, key depth w,
    value depth 2·w, relative positions for query/key/value) → 1×1 conv to 4·w.
    That is blocks 2–6 of res4 (the first one strides from 8 to 16 with a 3×3 conv)
    and all blocks of res5 (the first one strides inside the attention).
  * drop path with deeplab2's linear stage schedule (MaX-S: rate 0.2 at stride 32,
    0.15 at stride 16, none below).

41.34M trainable parameters, as deeplab2. Tiny network for CPU tests:
`AxialResNet(depths=(1, 1, 2, 1), width_multiplier=0.125, stem_width_multiplier=0.25)`
(keep ≥ 2 blocks in res4 to have an axial block there).
Endpoints as `resnet.ResNet`.
"""

from typing import Any, Mapping, Optional, Sequence

import keras

from deeplab2_kmax.backbones import resnet
from deeplab2_kmax.layers import axial_attention


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class AxialResNet(resnet.ResNet):
  """ResNet with axial-attention blocks at stride ≥ `axial_beyond_stride`.

  Args (besides `resnet.ResNet`'s, whose defaults change to the MaX-S ones):
    axial_beyond_stride: blocks working at this stride or coarser are axial (16).
    num_heads: attention heads (8).
    max_span: relative-position span of the attention tables (255 → 509 rows).
  """

  def __init__(self, depths: Sequence[int] = (3, 4, 6, 3),
               width_multiplier: float = 1.0, stem_type: str = "inception",
               stem_width_multiplier: float = 1.0, activation: str = "gelu",
               drop_path_rate: float = 0.0, drop_path_beyond_stride: int = 16,
               norm_config: Optional[Mapping[str, Any]] = None,
               axial_beyond_stride: int = 16, num_heads: int = 8,
               max_span: int = 255, **kwargs):
    # Set before super().__init__, which calls make_block.
    self.axial_beyond_stride = axial_beyond_stride
    self.num_heads = num_heads
    self.max_span = max_span
    super().__init__(depths=depths, width_multiplier=width_multiplier,
                     stem_type=stem_type, stem_width_multiplier=stem_width_multiplier,
                     activation=activation, drop_path_rate=drop_path_rate,
                     drop_path_beyond_stride=drop_path_beyond_stride,
                     norm_config=norm_config, **kwargs)

  def make_block(self, filters: int, strides: int, current_stride: int,
                 drop_path_rate: float, name: str) -> keras.layers.Layer:
    if 0 < self.axial_beyond_stride <= current_stride:
      return axial_attention.AxialBlock(
          filters, output_filters=4 * filters, strides=strides,
          num_heads=self.num_heads, bottleneck_expansion=2.0, key_expansion=1.0,
          value_expansion=2.0, max_span=self.max_span, activation=self.activation,
          activate_input=False, drop_path_rate=drop_path_rate,
          norm_config=self.norm_config, name=name)
    return super().make_block(filters, strides, current_stride, drop_path_rate, name)

  def get_config(self):
    config = super().get_config()
    config.update({"axial_beyond_stride": self.axial_beyond_stride,
                   "num_heads": self.num_heads, "max_span": self.max_span})
    return config
