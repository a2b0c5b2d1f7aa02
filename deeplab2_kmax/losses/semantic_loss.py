"""Auxiliary semantic cross-entropy on the training-only semantic head.

Per pixel: softmax cross-entropy of the semantic logits against the train id, weighted
by `pixel_weights` and zero at ignored pixels (void, crowd, padding). Per example the
weighted sum is divided by the number of contributing pixels (deeplab2's "non-zero"
normalization). Two optional pixel selections (both off by default):

* `sample_indices`: only those pixels (Gumbel-top-k sampled by inverse segment area; the
  COCO configs ask for 4096 samples at temperature 2.0, but deeplab2's loss builder never
  passes them, so its public training used all pixels; our default is all pixels too);
* `top_k_percent` < 1: only the hardest fraction of (weighted) pixel losses
  (Cityscapes: 0.2).
"""
from typing import Optional

import tensorflow as tf


def semantic_cross_entropy(logits: tf.Tensor, targets: tf.Tensor,
                           weights: tf.Tensor,
                           sample_indices: Optional[tf.Tensor] = None,
                           top_k_percent: float = 1.0) -> tf.Tensor:
  """Per-example loss [B].

  Args:
    logits: [B, P, C] flattened semantic logits.
    targets: [B, P] int32 train ids (any value in [0, C) at ignored pixels).
    weights: [B, P] pixel weights, 0 at ignored pixels.
    sample_indices: optional [B, K] pixel indices to restrict the loss to.
    top_k_percent: fraction in (0, 1] of the hardest pixels kept.
  """
  if not 0.0 < top_k_percent <= 1.0:
    raise ValueError(f"top_k_percent must be in (0, 1], got {top_k_percent}")
  logits = tf.cast(logits, tf.float32)
  if sample_indices is not None:
    logits = tf.gather(logits, sample_indices, batch_dims=1)
    targets = tf.gather(targets, sample_indices, batch_dims=1)
    weights = tf.gather(weights, sample_indices, batch_dims=1)
  cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(targets, tf.int32), logits=logits)
  weighted = cross_entropy * weights
  counted = tf.cast(weights > 0, tf.float32)
  if top_k_percent < 1.0:
    num_pixels = weighted.shape[1]
    k = max(1, int(round(top_k_percent * num_pixels)))
    weighted, top_indices = tf.math.top_k(weighted, k)
    counted = tf.gather(counted, top_indices, batch_dims=1)
  return tf.math.divide_no_nan(tf.reduce_sum(weighted, axis=-1),
                               tf.reduce_sum(counted, axis=-1))
