"""One kMaX transformer-decoder layer with a configurable pixel–cluster interaction.

Layer structure (deeplab2 `DualPathTransformerLayer` as used by kMaX):

    memory = conv1_bn_act(centers)                   # 256, GeLU
    pixel  = pixel_conv1_bn_act(act(pixel_features))  # 256, GeLU, flattened to [B, L, 256]
    out    = centers
    [k-means]   pred = own_head(pixel, memory); A = one_hot(argmax_N pred.mask_logits)
                out += drop_path(KMeansCrossAttention(A, pixel_values))
    attention   out += drop_path(conv3_bn(Attention(q=memory, kv=[pixels?; memory])))
    out = act(out); out = act(out + drop_path(FFN(out)))       # 256 → 2048 → 256
    [dual path] pixel_features += drop_path(pixel_conv3_bn(Attention(q=pixels, kv=memory)))

Every residual branch ends in a BN whose scale starts at zero.

`interaction` (Table 1 of the paper):
  * "kmeans_cross_attention" (default): k-means update + self-attention among centers.
  * "cross_attention": centers attend (one softmax) to all pixels and centers
    (MaX-DeepLab memory attention); no per-layer head, so no deep-supervision output.
  * "dual_path_cross_attention": cross_attention + pixels attend to the centers and
    are updated (returned to the caller; the next layer at the same stride uses them).
  * "dual_path_kmeans_cross_attention": k-means + self-attention + the pixel update.
"""

from typing import Any, Mapping, Optional

import keras
from keras import ops

from deeplab2_kmax import heads
from deeplab2_kmax.core import output_keys
from deeplab2_kmax.layers import attention
from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import drop_path as drop_path_lib
from deeplab2_kmax.layers import kmeans_cross_attention
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import policy_sharing

INTERACTIONS = ("kmeans_cross_attention", "cross_attention",
                "dual_path_cross_attention", "dual_path_kmeans_cross_attention")


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class KMaXTransformerLayer(keras.layers.Layer):
  """A kMaX decoder layer.

  Call with (pixel_features [B, H, W, Cp], centers [B, N, C]); returns
  (pixel_features_out [B, H, W, Cp], centers_out [B, N, C], prediction or None,
  assignment int32 [B, H, W] or None). prediction is the dict of this layer's own
  `PredictionHead` (k-means interactions only).

  Args:
    num_classes: C for the layer's prediction head.
    interaction: one of INTERACTIONS.
    bottleneck_channels: width of the projected pixels/centers (256).
    key_depth: total query/key depth (128).
    value_depth: total value depth (256; the k-means update uses it as one head).
    num_heads: attention heads (8).
    ffn_channels: FFN hidden width (2048).
    embedding_dim, pixel_head_channels: of the per-layer prediction head.
    activation: 'gelu'.
    drop_path_rate: drop-path rate on every residual branch (0.2 = keep 0.8).
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, num_classes: int,
               interaction: str = "kmeans_cross_attention",
               bottleneck_channels: int = 256, key_depth: int = 128,
               value_depth: int = 256, num_heads: int = 8,
               ffn_channels: int = 2048, embedding_dim: int = 128,
               pixel_head_channels: int = 256, activation: str = "gelu",
               drop_path_rate: float = 0.0,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    if interaction not in INTERACTIONS:
      raise ValueError(f"interaction must be one of {INTERACTIONS}, got "
                       f"{interaction!r}")
    self.num_classes = num_classes
    self.interaction = interaction
    self.bottleneck_channels = bottleneck_channels
    self.key_depth = key_depth
    self.value_depth = value_depth
    self.num_heads = num_heads
    self.ffn_channels = ffn_channels
    self.embedding_dim = embedding_dim
    self.pixel_head_channels = pixel_head_channels
    self.activation = activation
    self.drop_path_rate = drop_path_rate
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.use_kmeans = "kmeans" in interaction
    self.use_cross_attention = not self.use_kmeans  # centers attend to pixels
    self.use_pixel_update = interaction.startswith("dual_path")
    self._act = normalization.get_activation(activation)

    nc = self.norm_config
    qkv_init = keras.initializers.TruncatedNormal(stddev=bottleneck_channels ** -0.5)
    self.memory_conv1 = convolutions.DenseBN(bottleneck_channels, activation=activation,
                                             norm_config=nc, name="memory_conv1")
    self.pixel_conv1 = convolutions.DenseBN(bottleneck_channels, activation=activation,
                                            norm_config=nc, name="pixel_conv1")
    self.memory_qkv = convolutions.DenseBN(2 * key_depth + value_depth,
                                           kernel_initializer=qkv_init,
                                           norm_config=nc, name="memory_qkv")
    # Pixel projections: values always; keys for cross-attention; queries for the
    # dual-path pixel update.
    self._pixel_split = [key_depth] * int(self.use_pixel_update) + \
        [key_depth] * int(self.use_cross_attention) + [value_depth]
    self.pixel_projection = convolutions.DenseBN(
        sum(self._pixel_split), kernel_initializer=qkv_init, norm_config=nc,
        name="pixel_projection")
    self.memory_attention = attention.AttentionOperation(
        num_heads, value_depth, activation=activation, norm_config=nc,
        name="memory_attention")
    self.drop_path = drop_path_lib.DropPath(drop_path_rate, name="drop_path")
    if self.use_kmeans:
      self.prediction_head = heads.PredictionHead(
          num_classes, embedding_dim, pixel_head_channels, activation=activation,
          norm_config=nc, name="prediction_head")
    if self.use_pixel_update:
      self.pixel_attention = attention.AttentionOperation(
          num_heads, value_depth, activation=activation, norm_config=nc,
          name="pixel_attention")

  def build(self, pixel_features_shape, centers_shape):
    nc = self.norm_config
    channels = centers_shape[-1]
    self.memory_conv3 = convolutions.DenseBN(channels, bn_gamma_initializer="zeros",
                                             norm_config=nc, name="memory_conv3")
    self.ffn1 = convolutions.DenseBN(self.ffn_channels, activation=self.activation,
                                     norm_config=nc, name="ffn1")
    self.ffn2 = convolutions.DenseBN(channels, bn_gamma_initializer="zeros",
                                     norm_config=nc, name="ffn2")
    if self.use_kmeans:
      self.kmeans_update = kmeans_cross_attention.KMeansCrossAttention(
          channels, norm_config=nc, name="kmeans_update")
    if self.use_pixel_update:
      self.pixel_conv3 = convolutions.DenseBN(
          pixel_features_shape[-1], bn_gamma_initializer="zeros", norm_config=nc,
          name="pixel_conv3")
    policy_sharing.share_dtype_policy(self)

  def call(self, pixel_features, centers, training=False):
    shape = ops.shape(pixel_features)
    batch, height, width = shape[0], shape[1], shape[2]
    num_centers = centers.shape[1] or ops.shape(centers)[1]
    heads_ = self.num_heads

    memory = self.memory_conv1(centers, training=training)
    pixel = self.pixel_conv1(self._act(pixel_features), training=training)
    pixel_flat = ops.reshape(pixel, (batch, -1, self.bottleneck_channels))

    m_qkv = self.memory_qkv(memory, training=training)
    m_q = attention.split_heads(m_qkv[..., :self.key_depth], heads_)
    m_k = attention.split_heads(m_qkv[..., self.key_depth:2 * self.key_depth], heads_)
    m_v_flat = m_qkv[..., 2 * self.key_depth:]
    m_v = attention.split_heads(m_v_flat, heads_)

    p_proj = self.pixel_projection(pixel_flat, training=training)
    start, pieces = 0, []
    for size in self._pixel_split:
      pieces.append(p_proj[..., start:start + size])
      start += size
    p_v_flat = pieces[-1]
    p_q = attention.split_heads(pieces[0], heads_) if self.use_pixel_update else None
    p_k = (attention.split_heads(pieces[-2], heads_)
           if self.use_cross_attention else None)

    out = centers
    prediction, assignment = None, None
    if self.use_kmeans:
      prediction = self.prediction_head(pixel, memory, memory, training=training)
      assignment, one_hot = kmeans_cross_attention.cluster_assignment(
          prediction[output_keys.MASK_LOGITS], num_centers)
      one_hot = ops.reshape(one_hot, (batch, -1, num_centers))
      update = self.kmeans_update(one_hot, p_v_flat, training=training)
      out = out + self.drop_path(update, training=training)

    keys, values = m_k, m_v
    if self.use_cross_attention:
      keys = ops.concatenate([p_k, m_k], axis=1)
      values = ops.concatenate([attention.split_heads(p_v_flat, heads_), m_v], axis=1)
    attended = self.memory_attention(m_q, keys, values, training=training)
    attended = self.memory_conv3(attended, training=training)
    out = self._act(out + self.drop_path(attended, training=training))
    ffn = self.ffn2(self.ffn1(out, training=training), training=training)
    out = self._act(out + self.drop_path(ffn, training=training))

    pixel_out = pixel_features
    if self.use_pixel_update:
      p_att = self.pixel_attention(p_q, m_k, m_v, training=training)
      p_att = self.pixel_conv3(p_att, training=training)
      p_att = self.drop_path(p_att, training=training)
      pixel_out = pixel_features + ops.reshape(
          p_att, (batch, height, width, pixel_features.shape[-1]))
    return pixel_out, out, prediction, assignment

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes, "interaction": self.interaction,
        "bottleneck_channels": self.bottleneck_channels,
        "key_depth": self.key_depth, "value_depth": self.value_depth,
        "num_heads": self.num_heads, "ffn_channels": self.ffn_channels,
        "embedding_dim": self.embedding_dim,
        "pixel_head_channels": self.pixel_head_channels,
        "activation": self.activation, "drop_path_rate": self.drop_path_rate,
        "norm_config": self.norm_config,
    })
    return config
