"""kMaX transformer decoder: learned cluster centers refined over multi-scale pixels.

N learned cluster centers (truncated normal, std 1.0) are tiled over the batch and
refined by `num_layers_per_stride[i]` decoder layers on the pixel-decoder features of
stride 32, 16 and 8 (default (2, 2, 2): six layers). Each layer owns a prediction head
(k-means interactions), whose predictions are the deep-supervision outputs. After the
last layer, class and mask embeddings are projected (1×1 + BN + GeLU, 256).
"""

from typing import Any, Mapping, Optional, Sequence

import keras
from keras import ops

from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import transformer_layer


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class KMaXTransformerDecoder(keras.layers.Layer):
  """Cluster centers + kMaX decoder layers + final class/mask embedding projections.

  Call with a list of pixel features [stride 32, stride 16, stride 8] (one
  [B, h, w, C] tensor per entry of `num_layers_per_stride`). Returns a dict:
    "class_features" [B, N, channels], "mask_features" [B, N, channels],
    "aux_predictions": list (one dict per k-means layer, see PredictionHead),
    "cluster_assignments": list of int32 [B, h, w] argmax maps,
    "pixel_features": list of the (possibly dual-path-updated) pixel features.

  Args:
    num_classes: C for the per-layer heads.
    num_queries: N cluster centers (128 COCO, 256 Cityscapes).
    num_layers_per_stride: decoder layers on each input feature (default (2, 2, 2)).
    interaction: pixel–cluster interaction (see transformer_layer.INTERACTIONS).
    channels: center width (256).
    bottleneck_channels, key_depth, value_depth, num_heads, ffn_channels: of each
      decoder layer (256, 128, 256, 8, 2048).
    embedding_dim, pixel_head_channels: of the per-layer heads (128, 256).
    activation: 'gelu'.
    drop_path_rate: per residual branch (0.2 = keep prob 0.8 for COCO/Cityscapes).
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, num_classes: int, num_queries: int = 128,
               num_layers_per_stride: Sequence[int] = (2, 2, 2),
               interaction: str = "kmeans_cross_attention", channels: int = 256,
               bottleneck_channels: int = 256, key_depth: int = 128,
               value_depth: int = 256, num_heads: int = 8,
               ffn_channels: int = 2048, embedding_dim: int = 128,
               pixel_head_channels: int = 256, activation: str = "gelu",
               drop_path_rate: float = 0.2,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.num_queries = num_queries
    self.num_layers_per_stride = tuple(int(n) for n in num_layers_per_stride)
    self.interaction = interaction
    self.channels = channels
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
    self.decoder_layers = []
    for stage, count in enumerate(self.num_layers_per_stride):
      for i in range(count):
        self.decoder_layers.append(transformer_layer.KMaXTransformerLayer(
            num_classes, interaction=interaction,
            bottleneck_channels=bottleneck_channels, key_depth=key_depth,
            value_depth=value_depth, num_heads=num_heads,
            ffn_channels=ffn_channels, embedding_dim=embedding_dim,
            pixel_head_channels=pixel_head_channels, activation=activation,
            drop_path_rate=drop_path_rate, norm_config=self.norm_config,
            name=f"layer_stage{stage}_{i}"))
    self.class_projection = convolutions.DenseBN(
        channels, activation=activation, norm_config=self.norm_config,
        name="class_embedding_projection")
    self.mask_projection = convolutions.DenseBN(
        channels, activation=activation, norm_config=self.norm_config,
        name="mask_embedding_projection")

  def build(self, input_shape):
    self.cluster_centers = self.add_weight(
        name="cluster_centers", shape=(1, self.num_queries, self.channels),
        initializer=keras.initializers.TruncatedNormal(stddev=1.0))

  def call(self, pixel_features, training=False):
    pixel_features = list(pixel_features)
    if len(pixel_features) != len(self.num_layers_per_stride):
      raise ValueError(f"Expected {len(self.num_layers_per_stride)} pixel features "
                       f"(strides 32, 16, 8), got {len(pixel_features)}")
    batch = ops.shape(pixel_features[0])[0]
    centers = ops.tile(ops.cast(self.cluster_centers, pixel_features[0].dtype),
                       (batch, 1, 1))
    aux, assignments, pixels_out = [], [], []
    index = 0
    for stage, count in enumerate(self.num_layers_per_stride):
      pixels = pixel_features[stage]
      for _ in range(count):
        pixels, centers, prediction, assignment = self.decoder_layers[index](
            pixels, centers, training=training)
        index += 1
        if prediction is not None:
          aux.append(prediction)
          assignments.append(assignment)
      pixels_out.append(pixels)
    return {
        "class_features": self.class_projection(centers, training=training),
        "mask_features": self.mask_projection(centers, training=training),
        "aux_predictions": aux,
        "cluster_assignments": assignments,
        "pixel_features": pixels_out,
    }

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes, "num_queries": self.num_queries,
        "num_layers_per_stride": self.num_layers_per_stride,
        "interaction": self.interaction, "channels": self.channels,
        "bottleneck_channels": self.bottleneck_channels,
        "key_depth": self.key_depth, "value_depth": self.value_depth,
        "num_heads": self.num_heads, "ffn_channels": self.ffn_channels,
        "embedding_dim": self.embedding_dim,
        "pixel_head_channels": self.pixel_head_channels,
        "activation": self.activation, "drop_path_rate": self.drop_path_rate,
        "norm_config": self.norm_config,
    })
    return config
