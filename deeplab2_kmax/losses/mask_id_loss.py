"""Mask-ID cross-entropy of MaX-DeepLab / kMaX-DeepLab.

Every pixel inside a ground-truth segment is classified over the N mask slots (softmax
over slots of the mask logits); its target is the slot matched to its segment. Pixels
outside every segment (void, crowd, padding) and pixels of weight 0 are excluded;
the rest are weighted by `pixel_weights`. Per example the weighted sum is divided by the
number of contributing pixels (deeplab2's "non-zero" normalization).
"""
import tensorflow as tf

from deeplab2_kmax.losses.ground_truth import GroundTruth


def mask_id_cross_entropy(mask_logits: tf.Tensor, gt: GroundTruth,
                          assignment: tf.Tensor) -> tf.Tensor:
  """Per-example loss [B].

  Args:
    mask_logits: [B, P, N] flattened mask logits.
    gt: the GroundTruth (masks [B, P, M], pixel_weights [B, P]).
    assignment: [B, M, N] one-hot matching (zero rows for unused gt slots).
  """
  mask_logits = tf.cast(mask_logits, tf.float32)
  target = tf.einsum("bpm,bmn->bpn", gt.masks, assignment)          # [B, P, N]
  has_target = tf.reduce_sum(target, axis=-1)
  cross_entropy = -tf.reduce_sum(target * tf.nn.log_softmax(mask_logits, axis=-1),
                                 axis=-1)
  weights = gt.pixel_weights * has_target
  count = tf.reduce_sum(tf.cast(weights > 0, tf.float32), axis=-1)
  return tf.math.divide_no_nan(tf.reduce_sum(weights * cross_entropy, axis=-1),
                               count)
