"""kMaX transformer decoder: learned cluster centers refined over multi-scale pixels.

N learned cluster centers (truncated normal, std 1.0) are tiled over the batch and
refined by `num_layers_per_stride[i]` decoder layers on the pixel-decoder features of
stride 32, 16 and 8 (default (2, 2, 2): six layers). Each layer owns a prediction head
(k-means interactions), whose predictions are the deep-supervision outputs. After the
last layer, class and mask embeddings are projected (1×1 + BN + GeLU, 256).

Drop-query regularization (seed Table 3 "✱": 256 queries with drop query). With
`drop_query_keep_number = K` (0 = off), every training call keeps a random subset of K
of the N cluster centers per example (`keras.random` with the layer's seed generator,
so a seed makes it reproducible; XLA-compatible: K is static) and runs the decoder on
those K only, so dropped centers take no pixels in the k-means assignment, take no
part in self-attention nor in the BN statistics, exactly as if the model had K
queries. Outputs keep the [B, N, ...] contract: `restore_queries` puts the K results
back at their query indices and fills the dropped ones with constants: class logits
that say "void" with probability 1 (0 for void, -1e4 for the real classes) and mask
logits of -1e4 (zero mask probability/dice), so their Hungarian cost is 0, the worst
possible (costs are -(class prob × dice) <= 0), they get no gradient and their losses
are 0 when unmatched. Keep K >= the number of GT segments per image (max_segments,
128 by default) so that every GT segment can be matched to a kept query. Inference
(training=False) always uses all N queries. deeplab2 hard-codes
`drop_query_keep_number=0` in its released kMaX code and bytedance/kmax-deeplab has
no drop query; the random-subset-per-image scheme here is ours (documented choice).
"""

from typing import Any, Mapping, Optional, Sequence

import keras
from keras import ops

from deeplab2_kmax.core import output_keys
from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import tracking
from deeplab2_kmax import transformer_layer

# Fill value of the logits of dropped queries (finite: safe in float16 and softmax).
DROPPED_LOGIT = -1e4


def restore_queries(tensor, kept, num_queries: int, fill, axis: int):
  """Scatters per-kept-query values back to all `num_queries` query slots.

  Args:
    tensor: values of the K kept queries along `axis` (e.g. class logits [B, K, D]
      with axis 1, or mask logits [B, h, w, K] with axis -1).
    kept: int32 [B, K] query indices (distinct) that `tensor` holds, in order.
    num_queries: N.
    fill: scalar or a vector broadcastable to a slice of `tensor` (without `axis`)
      placed at the dropped queries' slots.
    axis: the query axis of `tensor` (1 or -1).
  Returns the tensor with N entries along `axis`; slot kept[b, k] holds tensor's k-th.
  """
  rank = len(tensor.shape)
  axis = axis % rank
  k = ops.shape(kept)[1]
  # pos[b, n] = position of query n among the kept ones, or K (the filler) if dropped.
  one_hot = ops.one_hot(kept, num_queries, dtype="int32")  # [B, K, N]
  is_kept = ops.sum(one_hot, axis=1)  # [B, N]
  positions = ops.arange(k, dtype="int32")[None, :, None]
  pos = ops.sum(one_hot * positions, axis=1) + (1 - is_kept) * k
  filler_shape = list(ops.shape(tensor))
  filler_shape[axis] = 1
  filler = ops.broadcast_to(ops.cast(fill, tensor.dtype), filler_shape)
  padded = ops.concatenate([tensor, filler], axis=axis)
  index_shape = [1] * rank
  index_shape[0] = -1
  index_shape[axis] = num_queries
  index = ops.reshape(pos, index_shape)
  target_shape = list(ops.shape(tensor))
  target_shape[axis] = num_queries
  index = ops.broadcast_to(index, target_shape)
  return ops.take_along_axis(padded, index, axis=axis)


def restore_prediction(prediction, kept, num_queries: int, num_classes: int):
  """`restore_queries` on a PredictionHead dict (class/mask logits; pixels as-is)."""
  out = dict(prediction)
  void_fill = ops.concatenate([ops.full((num_classes,), DROPPED_LOGIT),
                               ops.zeros((1,))])
  out[output_keys.CLASS_LOGITS] = restore_queries(
      prediction[output_keys.CLASS_LOGITS], kept, num_queries, void_fill, axis=1)
  out[output_keys.MASK_LOGITS] = restore_queries(
      prediction[output_keys.MASK_LOGITS], kept, num_queries, DROPPED_LOGIT, axis=-1)
  return out


def restore_assignment(assignment, kept):
  """Maps an argmax map over the K kept queries [B, h, w] to query indices."""
  shape = ops.shape(assignment)
  flat = ops.reshape(assignment, (shape[0], -1))
  return ops.reshape(ops.take_along_axis(kept, ops.cast(flat, kept.dtype), axis=1),
                     shape)


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class KMaXTransformerDecoder(tracking.TrackListHeldLayers, keras.layers.Layer):
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
    drop_query_keep_number: K > 0 turns on drop query in training: K random centers
      per example are kept (see the module docstring); 0 = off (default).
    drop_query_seed: optional seed of the drop-query sampling.
    norm_config: see `normalization.batch_norm`.

  With drop query in a training call, the returned "class_features"/"mask_features"
  hold the K kept centers [B, K, channels] and "kept_queries" their int32 query
  indices [B, K] (pass both to `restore_prediction` after the final heads); the
  per-layer predictions and assignments are already restored to N queries.
  Otherwise there is no "kept_queries" key.
  """

  def __init__(self, num_classes: int, num_queries: int = 128,
               num_layers_per_stride: Sequence[int] = (2, 2, 2),
               interaction: str = "kmeans_cross_attention", channels: int = 256,
               bottleneck_channels: int = 256, key_depth: int = 128,
               value_depth: int = 256, num_heads: int = 8,
               ffn_channels: int = 2048, embedding_dim: int = 128,
               pixel_head_channels: int = 256, activation: str = "gelu",
               drop_path_rate: float = 0.2, drop_query_keep_number: int = 0,
               drop_query_seed: Optional[int] = None,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    if not 0 <= int(drop_query_keep_number) <= num_queries:
      raise ValueError(f"drop_query_keep_number must be in [0, num_queries={num_queries}]"
                       f", got {drop_query_keep_number}")
    self.num_classes = num_classes
    self.num_queries = num_queries
    self.drop_query_keep_number = int(drop_query_keep_number)
    self.drop_query_seed = drop_query_seed
    self._drop_query_seed_generator = keras.random.SeedGenerator(drop_query_seed)
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
    kept = None
    if (training and 0 < self.drop_query_keep_number < self.num_queries):
      kept = self._sample_kept_queries(batch)
      centers = ops.take_along_axis(centers, kept[:, :, None], axis=1)
    aux, assignments, pixels_out = [], [], []
    index = 0
    for stage, count in enumerate(self.num_layers_per_stride):
      pixels = pixel_features[stage]
      for _ in range(count):
        pixels, centers, prediction, assignment = self.decoder_layers[index](
            pixels, centers, training=training)
        index += 1
        if prediction is not None:
          if kept is not None:
            prediction = restore_prediction(prediction, kept, self.num_queries,
                                            self.num_classes)
            assignment = restore_assignment(assignment, kept)
          aux.append(prediction)
          assignments.append(assignment)
      pixels_out.append(pixels)
    outputs = {
        "class_features": self.class_projection(centers, training=training),
        "mask_features": self.mask_projection(centers, training=training),
        "aux_predictions": aux,
        output_keys.CLUSTER_ASSIGNMENTS: assignments,
        "pixel_features": pixels_out,
    }
    if kept is not None:
      outputs["kept_queries"] = kept
    return outputs

  def _sample_kept_queries(self, batch):
    """int32 [B, K]: K distinct random query indices per example, ascending."""
    noise = keras.random.uniform((batch, self.num_queries),
                                 seed=self._drop_query_seed_generator)
    order = ops.argsort(noise, axis=-1)[:, :self.drop_query_keep_number]
    return ops.cast(ops.sort(order, axis=-1), "int32")

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
        "drop_query_keep_number": self.drop_query_keep_number,
        "drop_query_seed": self.drop_query_seed,
        "norm_config": self.norm_config,
    })
    return config
