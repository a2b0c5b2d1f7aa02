"""k-means cross-attention: the cluster-center update of kMaX-DeepLab.

Standard cross-attention normalizes the center-pixel affinities with a softmax over
the *spatial* axis. k-means cross-attention instead takes, for every pixel, the argmax
over the *cluster* axis of the mask logits (the k-means assignment step, a hard
assignment), and then updates every center with the sum of the value features of its
assigned pixels (the k-means update step):

    A = one_hot(argmax_N(mask_logits))          # [B, HW, N], no gradient
    update = conv3_bn(BN(Aᵀ V))                 # [B, N, C]
    centers = centers + drop_path(update)

The mask logits come from the prediction head owned by each decoder layer (see
`deeplab2_kmax/transformer_layer.py`); this module holds the assignment and the update.
"""

from typing import Any, Mapping, Optional

import keras
from keras import ops

from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.kernels import portable_ops


def cluster_assignment(mask_logits, num_clusters: Optional[int] = None):
  """Hard pixel-to-cluster assignment from [B, H, W, N] mask logits.

  Returns (assignment_map int32 [B, H, W], one_hot float [B, H, W, N]); the one-hot
  is wrapped in stop_gradient (argmax has no gradient; this makes it explicit).
  """
  num_clusters = num_clusters or mask_logits.shape[-1]
  index = portable_ops.argmax(mask_logits, axis=-1)  # ops.argmax, exportable
  one_hot = ops.one_hot(index, num_clusters, dtype=mask_logits.dtype)
  return index, ops.stop_gradient(one_hot)


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class KMeansCrossAttention(keras.layers.Layer):
  """Center update from a hard assignment: Σ assigned pixel values → BN → 1×1 conv+BN.

  Call with (assignment [B, L, N] one-hot, pixel_values [B, L, C]); returns the
  residual update [B, N, out_channels] (the caller adds it to the centers). The last
  BN scale starts at zero so each layer starts as the identity.

  Args:
    out_channels: channels of the centers (256).
    norm_config: see `normalization.batch_norm`.
  """

  def __init__(self, out_channels: int,
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    super().__init__(**kwargs)
    self.out_channels = out_channels
    self.norm_config = normalization.resolve_norm_config(norm_config)
    self.retrieved_bn = normalization.batch_norm(self.norm_config,
                                                 name="retrieved_bn")
    self.output_projection = convolutions.DenseBN(
        out_channels, bn_gamma_initializer="zeros", norm_config=self.norm_config,
        name="output_projection")

  def build(self, input_shape):
    pass

  def call(self, assignment, pixel_values, training=False):
    summed = ops.einsum("bln,blc->bnc", assignment, pixel_values)
    summed = self.retrieved_bn(summed, training=training)
    return self.output_projection(summed, training=training)

  def get_config(self):
    config = super().get_config()
    config.update({"out_channels": self.out_channels,
                   "norm_config": self.norm_config})
    return config
