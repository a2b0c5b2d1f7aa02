"""Axial attention with relative positions (Axial-DeepLab) and the axial block.

`AxialAttention1D` is multi-head self-attention along one axis of a [B, L, C] input.
Similarity = content (q·k) + query-relative (q·r_q) + key-relative (k·r_k), each term
batch-normalized per head; output = retrieved content (Σ w v) + retrieved relative
value (Σ w r_v), each batch-normalized. The relative embeddings are one table of
2 * max_span - 1 rows per kind (query / key / value), shared by the heads, indexed by
the clipped relative distance j - i (deeplab2: max_span 255 → 509 rows).

`AxialAttention2D` applies it along the height axis and then the width axis.

`AxialBlock` is the residual block of axial-ResNet / the kMaX pixel decoder:
activation(input) → 1×1 conv+BN+act → height+width axial attention → act →
1×1 conv+BN (zero-init scale) → drop path → + shortcut. Like deeplab2, the block
output is *not* activated (the next block, or the caller, activates it).

Everything is batched einsum (no loops over positions); lengths may be dynamic.
"""

from typing import Any, Mapping, Optional

import keras
from keras import ops

from deeplab2_kmax.kernels import folded_attention
from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import drop_path as drop_path_lib
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import policy_sharing
from deeplab2_kmax.layers import tracking


def project(x, kernel):
  """[B, L, C] x [C, D] -> [B, L, D] as one 2-D matmul.

  `ops.einsum("blc,cd->bld")` is a broadcasting BatchMatMulV2 on TensorFlow, whose
  kernel gradient is B separate [C, D] products and a Sum over them; flattened to
  [B*L, C], the kernel gradient is one matmul (the same values).
  """
  shape = ops.shape(x)
  y = ops.matmul(ops.reshape(x, (-1, x.shape[-1])), kernel)
  return ops.reshape(y, (shape[0], shape[1], kernel.shape[-1]))


def relative_distance_index(length, max_span: int):
  """[L, L] int32 table index of relative distance (j - i), clipped to the table."""
  positions = ops.arange(length, dtype="int32")
  distance = positions[None, :] - positions[:, None]
  distance = ops.clip(distance, -(max_span - 1), max_span - 1)
  return distance + (max_span - 1)


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class AxialAttention1D(tracking.TrackListHeldLayers, keras.layers.Layer):
  """Global multi-head axial attention along axis 1 of a [B, L, C] tensor.

  Args:
    key_depth: total query/key depth (split over heads).
    value_depth: total value depth = output channels.
    num_heads: number of heads.
    max_span: relative distances are clipped to ±(max_span - 1); the tables have
      2 * max_span - 1 rows.
    use_query_rpe, use_key_rpe, use_value_rpe: which relative terms to use.
    rpe_initializer_std: std of the truncated-normal init of the tables.
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, key_depth: int, value_depth: int, num_heads: int = 8,
               max_span: int = 255, use_query_rpe: bool = True,
               use_key_rpe: bool = True, use_value_rpe: bool = True,
               rpe_initializer_std: float = 1.0,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    if key_depth % num_heads or value_depth % num_heads:
      raise ValueError(f"key_depth {key_depth} and value_depth {value_depth} must "
                       f"be divisible by num_heads {num_heads}")
    self.key_depth = key_depth
    self.value_depth = value_depth
    self.num_heads = num_heads
    self.max_span = max_span
    self.use_query_rpe = use_query_rpe
    self.use_key_rpe = use_key_rpe
    self.use_value_rpe = use_value_rpe
    self.rpe_initializer_std = rpe_initializer_std
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self._num_terms = 1 + int(use_query_rpe) + int(use_key_rpe)
    self.qkv_bn = normalization.batch_norm(self.norm_config, name="qkv_bn")
    # One BN per similarity term / retrieved term, normalizing per head (axis 1 of
    # [B, heads, L, L]) resp. per output channel — deeplab2's (3, heads) and
    # (2, heads, depth) parameter layout.
    self.similarity_bns = [
        normalization.batch_norm(self.norm_config, axis=1, name=f"similarity_bn_{i}")
        for i in range(self._num_terms)]
    self.content_bn = normalization.batch_norm(self.norm_config, name="content_bn")
    self.value_rpe_bn = (normalization.batch_norm(self.norm_config, name="value_rpe_bn")
                         if use_value_rpe else None)

  def build(self, input_shape):
    channels = input_shape[-1]
    table_rows = 2 * self.max_span - 1
    dk = self.key_depth // self.num_heads
    dv = self.value_depth // self.num_heads
    self.qkv_kernel = self.add_weight(
        name="qkv_kernel", shape=(channels, 2 * self.key_depth + self.value_depth),
        initializer=keras.initializers.TruncatedNormal(stddev=channels ** -0.5))
    rpe_init = keras.initializers.TruncatedNormal(stddev=self.rpe_initializer_std)
    self.query_rpe = (self.add_weight(name="query_rpe", shape=(table_rows, dk),
                                      initializer=rpe_init)
                      if self.use_query_rpe else None)
    self.key_rpe = (self.add_weight(name="key_rpe", shape=(table_rows, dk),
                                    initializer=rpe_init)
                    if self.use_key_rpe else None)
    self.value_rpe = (self.add_weight(name="value_rpe", shape=(table_rows, dv),
                                      initializer=rpe_init)
                      if self.use_value_rpe else None)
    self.qkv_bn.build((None, None, 2 * self.key_depth + self.value_depth))
    for bn in self.similarity_bns:
      bn.build((None, self.num_heads, None, None))
    self.content_bn.build((None, None, self.value_depth))
    if self.value_rpe_bn is not None:
      self.value_rpe_bn.build((None, None, self.value_depth))

  def call(self, x, training=False):
    fast = folded_attention.axial_attention_1d(self, x, training)
    if fast is not None:
      return fast
    length = ops.shape(x)[1]
    qkv = project(x, ops.cast(self.qkv_kernel, x.dtype))
    q, k, v = self.split_heads(self.qkv_bn(qkv, training=training), length)
    index = None
    if self._num_terms > 1 or self.use_value_rpe:
      index = relative_distance_index(length, self.max_span)

    terms = [ops.einsum("blhd,bmhd->bhlm", q, k)]
    if self.use_query_rpe:
      rel = ops.take(ops.cast(self.query_rpe, x.dtype), index, axis=0)  # [L, M, dk]
      terms.append(ops.einsum("blhd,lmd->bhlm", q, rel))
    if self.use_key_rpe:
      rel = ops.take(ops.cast(self.key_rpe, x.dtype), index, axis=0)
      terms.append(ops.einsum("bmhd,lmd->bhlm", k, rel))
    logits = None
    for bn, term in zip(self.similarity_bns, terms):
      term = bn(term, training=training)
      logits = term if logits is None else logits + term
    weights = ops.softmax(logits, axis=-1)

    out = ops.einsum("bhlm,bmhd->blhd", weights, v)
    out = self.content_bn(ops.reshape(out, (-1, length, self.value_depth)),
                          training=training)
    if self.use_value_rpe:
      rel = ops.take(ops.cast(self.value_rpe, x.dtype), index, axis=0)  # [L, M, dv]
      rpe_out = ops.einsum("bhlm,lmd->blhd", weights, rel)
      rpe_out = self.value_rpe_bn(
          ops.reshape(rpe_out, (-1, length, self.value_depth)), training=training)
      out = out + rpe_out
    return out

  # The projection and the relative-position table index, for the folded inference
  # form (kernels.folded_attention).
  project = staticmethod(project)
  distance_index = staticmethod(relative_distance_index)

  def split_heads(self, qkv, length):
    """q, k [B, L, heads, dk] and v [B, L, heads, dv] from qkv [B, L, 2 key + value].

    A split (its gradient is one concat), not three slices (three zero-padded slice
    gradients and their sum).
    """
    heads = self.num_heads
    q, k, v = ops.split(qkv, [self.key_depth, 2 * self.key_depth], axis=-1)
    return (ops.reshape(q, (-1, length, heads, self.key_depth // heads)),
            ops.reshape(k, (-1, length, heads, self.key_depth // heads)),
            ops.reshape(v, (-1, length, heads, self.value_depth // heads)))

  def batch_norms(self):
    bns = [self.qkv_bn, self.content_bn] + list(self.similarity_bns)
    return bns + ([self.value_rpe_bn] if self.value_rpe_bn is not None else [])

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.value_depth,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "key_depth": self.key_depth, "value_depth": self.value_depth,
        "num_heads": self.num_heads, "max_span": self.max_span,
        "use_query_rpe": self.use_query_rpe, "use_key_rpe": self.use_key_rpe,
        "use_value_rpe": self.use_value_rpe,
        "rpe_initializer_std": self.rpe_initializer_std,
        "norm_config": self.norm_config,
    })
    return config


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class AxialAttention2D(keras.layers.Layer):
  """Height-axis then width-axis axial attention on [B, H, W, C].

  Args:
    filters: base width; key depth = filters * key_expansion, value depth (= output
      channels) = filters * value_expansion.
    strides: 1 or 2; applied after each axis (rows after the height axis, columns
      after the width axis), output size ceil(size / strides).
    num_heads, max_span, norm_config: as `AxialAttention1D`.
  """

  def __init__(self, filters: int, strides: int = 1, num_heads: int = 8,
               key_expansion: float = 1.0, value_expansion: float = 2.0,
               max_span: int = 255,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.strides = strides
    self.num_heads = num_heads
    self.key_expansion = key_expansion
    self.value_expansion = value_expansion
    self.max_span = max_span
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.key_depth = int(round(filters * key_expansion))
    self.value_depth = int(round(filters * value_expansion))
    common = dict(key_depth=self.key_depth, value_depth=self.value_depth,
                  num_heads=num_heads, max_span=max_span,
                  norm_config=self.norm_config)
    self.height_axis = AxialAttention1D(name="height_axis", **common)
    self.width_axis = AxialAttention1D(name="width_axis", **common)

  def build(self, input_shape):
    self.height_axis.build((None, None, input_shape[-1]))
    self.width_axis.build((None, None, self.value_depth))

  def call(self, x, training=False):
    shape = ops.shape(x)
    height, width, channels = shape[1], shape[2], x.shape[-1]
    # Height axis: fold the width axis into the batch.
    y = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, height, channels))
    y = self.height_axis(y, training=training)
    y = ops.transpose(ops.reshape(y, (-1, width, height, self.value_depth)),
                      (0, 2, 1, 3))
    if self.strides > 1:
      y = y[:, ::self.strides]
    new_height = ops.shape(y)[1]
    # Width axis: fold the height axis into the batch.
    y = ops.reshape(y, (-1, width, self.value_depth))
    y = self.width_axis(y, training=training)
    y = ops.reshape(y, (-1, new_height, width, self.value_depth))
    if self.strides > 1:
      y = y[:, :, ::self.strides]
    return y

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters, "strides": self.strides,
        "num_heads": self.num_heads, "key_expansion": self.key_expansion,
        "value_expansion": self.value_expansion, "max_span": self.max_span,
        "norm_config": self.norm_config,
    })
    return config


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class AxialBlock(keras.layers.Layer):
  """Residual axial-attention bottleneck block (Axial-DeepLab / kMaX pixel decoder).

  Args:
    filters: attention width w. conv1 outputs w * bottleneck_expansion channels;
      attention uses key depth w * key_expansion and value depth
      w * value_expansion; the block outputs `output_filters` (default 4w).
    output_filters: output channels (default 4 * filters).
    strides: 1 or 2 (applied inside the attention; shortcut is a strided 1×1 conv).
    num_heads: attention heads (8).
    bottleneck_expansion: conv1 width multiplier (deeplab2: 2).
    key_expansion, value_expansion: attention depth multipliers (1 and 2).
    max_span: relative-position span (tables of 2 * max_span - 1 rows).
    activation: 'gelu' (kMaX pixel decoder, MaX-S) or 'relu'.
    activate_input: apply the activation to the block input first (deeplab2
      blocks receive un-activated features from the previous block).
    drop_path_rate: drop-path rate on the residual branch.
    norm_config: see `normalization.batch_norm`.

  Output is not activated.
  """

  def __init__(self, filters: int, output_filters: Optional[int] = None,
               strides: int = 1, num_heads: int = 8,
               bottleneck_expansion: float = 2.0, key_expansion: float = 1.0,
               value_expansion: float = 2.0, max_span: int = 255,
               activation: str = "gelu", activate_input: bool = True,
               drop_path_rate: float = 0.0,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.output_filters = output_filters or 4 * filters
    self.strides = strides
    self.num_heads = num_heads
    self.bottleneck_expansion = bottleneck_expansion
    self.key_expansion = key_expansion
    self.value_expansion = value_expansion
    self.max_span = max_span
    self.activation = activation
    self.activate_input = activate_input
    self.drop_path_rate = drop_path_rate
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self._act = normalization.get_activation(activation)
    self.conv1 = convolutions.ConvBN(
        int(round(filters * bottleneck_expansion)), 1, activation=activation,
        norm_config=self.norm_config, name="conv1")
    self.attention = AxialAttention2D(
        filters, strides=strides, num_heads=num_heads,
        key_expansion=key_expansion, value_expansion=value_expansion,
        max_span=max_span, norm_config=self.norm_config, name="attention")
    self.conv3 = convolutions.ConvBN(
        self.output_filters, 1, bn_gamma_initializer="zeros", activation=None,
        norm_config=self.norm_config, name="conv3")
    self.drop_path = drop_path_lib.DropPath(drop_path_rate, name="drop_path")
    self.shortcut = None

  def build(self, input_shape):
    in_channels = input_shape[-1]
    if in_channels != self.output_filters or self.strides != 1:
      self.shortcut = convolutions.ConvBN(
          self.output_filters, 1, strides=self.strides, activation=None,
          norm_config=self.norm_config, name="shortcut")
      policy_sharing.share_dtype_policy(self)
      self.shortcut.build(tuple(input_shape))
    self.conv1.build(tuple(input_shape))
    mid = int(round(self.filters * self.bottleneck_expansion))
    self.attention.build((None, None, None, mid))
    self.conv3.build((None, None, None, self.attention.value_depth))

  def call(self, x, training=False):
    if self.activate_input:
      x = self._act(x)
    shortcut = x if self.shortcut is None else self.shortcut(x, training=training)
    y = self.conv1(x, training=training)
    y = self._act(self.attention(y, training=training))
    y = self.conv3(y, training=training)
    y = self.drop_path(y, training=training)
    return y + shortcut

  def compute_output_shape(self, input_shape):
    def down(n):
      return None if n is None else (n + self.strides - 1) // self.strides
    return (input_shape[0], down(input_shape[1]), down(input_shape[2]),
            self.output_filters)

  def get_config(self):
    config = super().get_config()
    config.update({
        "filters": self.filters, "output_filters": self.output_filters,
        "strides": self.strides, "num_heads": self.num_heads,
        "bottleneck_expansion": self.bottleneck_expansion,
        "key_expansion": self.key_expansion,
        "value_expansion": self.value_expansion, "max_span": self.max_span,
        "activation": self.activation, "activate_input": self.activate_input,
        "drop_path_rate": self.drop_path_rate, "norm_config": self.norm_config,
    })
    return config
