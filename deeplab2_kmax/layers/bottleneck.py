"""Residual bottleneck block (ResNet) in the pre-activated-input convention.

activation(input) → 1×1 conv+BN+act (w) → 3×3 conv+BN+act (w, stride, atrous rate) →
1×1 conv+BN (4w, zero-init scale) → drop path → + shortcut (strided 1×1 conv+BN when
the shape changes). Used at strides 8 and 4 (and 2) of the kMaX pixel decoder (GeLU),
where deeplab2 dilates the 3×3 conv by 2 (see `pixel_decoder`). The output is not
activated, matching `AxialBlock`.
"""

from typing import Any, Mapping, Optional

import keras

from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import drop_path as drop_path_lib
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import policy_sharing


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class BottleneckBlock(keras.layers.Layer):
  """Bottleneck residual block.

  Args:
    filters: bottleneck width w.
    output_filters: output channels (default 4w).
    strides: stride of the 3×3 conv.
    dilation_rate: atrous rate of the 3×3 conv (stride 1 only).
    activation: 'gelu' or 'relu'.
    activate_input: apply the activation to the input first.
    drop_path_rate: drop-path rate of the residual branch.
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, filters: int, output_filters: Optional[int] = None,
               strides: int = 1, dilation_rate: int = 1, activation: str = "gelu",
               activate_input: bool = True, drop_path_rate: float = 0.0,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.output_filters = output_filters or 4 * filters
    self.strides = strides
    self.dilation_rate = int(dilation_rate)
    if self.dilation_rate > 1 and strides != 1:
      raise ValueError("BottleneckBlock: an atrous 3x3 conv must have stride 1")
    self.activation = activation
    self.activate_input = activate_input
    self.drop_path_rate = drop_path_rate
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self._act = normalization.get_activation(activation)
    nc = self.norm_config
    self.conv1 = convolutions.ConvBN(filters, 1, activation=activation,
                                     norm_config=nc, name="conv1")
    self.conv2 = convolutions.ConvBN(filters, 3, strides=strides,
                                     dilation_rate=self.dilation_rate,
                                     activation=activation, norm_config=nc,
                                     name="conv2")
    self.conv3 = convolutions.ConvBN(self.output_filters, 1,
                                     bn_gamma_initializer="zeros", norm_config=nc,
                                     name="conv3")
    self.drop_path = drop_path_lib.DropPath(drop_path_rate, name="drop_path")
    self.shortcut = None

  def build(self, input_shape):
    if input_shape[-1] != self.output_filters or self.strides != 1:
      self.shortcut = convolutions.ConvBN(
          self.output_filters, 1, strides=self.strides, norm_config=self.norm_config,
          name="shortcut")
      policy_sharing.share_dtype_policy(self)
      self.shortcut.build(tuple(input_shape))
    self.conv1.build(tuple(input_shape))
    self.conv2.build((None, None, None, self.filters))
    self.conv3.build((None, None, None, self.filters))

  def call(self, x, training=False):
    if self.activate_input:
      x = self._act(x)
    shortcut = x if self.shortcut is None else self.shortcut(x, training=training)
    y = self.conv1(x, training=training)
    y = self.conv2(y, training=training)
    y = self.conv3(y, training=training)
    return self.drop_path(y, training=training) + shortcut

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters, "output_filters": self.output_filters,
        "strides": self.strides, "dilation_rate": self.dilation_rate,
        "activation": self.activation,
        "activate_input": self.activate_input,
        "drop_path_rate": self.drop_path_rate, "norm_config": self.norm_config,
    })
    return config
