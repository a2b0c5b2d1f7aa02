"""Multi-head attention with batch-normalized similarities (MaX-DeepLab style).

Used for the self-attention among cluster centers, for the plain (spatial-softmax)
cross-attention of the Table-1 baselines, and for the pixel-to-center attention of
the dual-path variants. deeplab2 normalizes the similarity logits with a BN per head
and the retrieved values with a BN per (head, channel), then applies the activation.
"""

from typing import Any, Mapping, Optional

import keras
from keras import ops

from deeplab2_kmax.layers import normalization


def split_heads(x, num_heads: int):
  """[B, L, C] → [B, L, heads, C / heads]."""
  return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], num_heads,
                         x.shape[-1] // num_heads))


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class AttentionOperation(keras.layers.Layer):
  """softmax(BN(q·k)) v → BN → activation, with multiple heads.

  Call with (query [B, L, heads, dk], key [B, M, heads, dk], value [B, M, heads, dv]);
  returns [B, L, heads * dv].

  Args:
    num_heads: number of heads (fixes the similarity BN size).
    value_depth: total value depth heads * dv (fixes the retrieved-value BN size).
    activation: applied to the retrieved values ('gelu' in kMaX).
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, num_heads: int, value_depth: int, activation: str = "gelu",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads
    self.value_depth = value_depth
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.similarity_bn = normalization.batch_norm(self.norm_config, axis=1,
                                                  name="similarity_bn")
    self.retrieved_bn = normalization.batch_norm(self.norm_config,
                                                 name="retrieved_bn")
    self._act = normalization.get_activation(activation)

  def build(self, input_shape):
    self.similarity_bn.build((None, self.num_heads, None, None))
    self.retrieved_bn.build((None, None, self.value_depth))

  def call(self, query, key, value, training=False):
    logits = ops.einsum("blhd,bmhd->bhlm", query, key)
    logits = self.similarity_bn(logits, training=training)
    weights = ops.softmax(logits, axis=-1)
    out = ops.einsum("bhlm,bmhd->blhd", weights, value)
    out = ops.reshape(out, (ops.shape(out)[0], ops.shape(out)[1], self.value_depth))
    return self._act(self.retrieved_bn(out, training=training))

  def get_config(self):
    config = super().get_config()
    config.update({"num_heads": self.num_heads, "value_depth": self.value_depth,
                   "activation": self.activation, "norm_config": self.norm_config})
    return config
