"""Tests for the k-means assignment and center update."""

import numpy as np
import tensorflow as tf

from deeplab2_kmax.layers import kmeans_cross_attention
from deeplab2_kmax.layers import test_utils


def test_cluster_assignment_is_argmax_one_hot_without_gradient():
  rng = np.random.default_rng(0)
  logits = tf.constant(rng.normal(size=(2, 3, 4, 5)).astype("float32"))
  with tf.GradientTape() as tape:
    tape.watch(logits)
    index, one_hot = kmeans_cross_attention.cluster_assignment(logits)
    loss = tf.reduce_sum(one_hot * logits)
  np.testing.assert_array_equal(index.numpy(), np.argmax(logits.numpy(), -1))
  assert index.dtype == tf.int32
  np.testing.assert_array_equal(one_hot.numpy(), np.eye(5)[index.numpy()])
  # Only the direct `* logits` path carries gradient: d/dlogits = one_hot.
  np.testing.assert_array_equal(tape.gradient(loss, logits).numpy(), one_hot.numpy())


def test_center_update_matches_numpy_reference():
  rng = np.random.default_rng(1)
  batch, length, clusters, channels = 2, 11, 4, 6
  labels = rng.integers(0, clusters, size=(batch, length))
  labels[:, 0] = 3  # make sure cluster 3 is used; some clusters may stay empty
  assignment = np.eye(clusters, dtype="float32")[labels]
  values = rng.normal(size=(batch, length, channels)).astype("float32")
  layer = kmeans_cross_attention.KMeansCrossAttention(5)
  layer(assignment, values)
  test_utils.randomize_batch_norms(layer, rng)  # also un-zeros the last BN scale
  got = np.asarray(layer(assignment, values, training=False))

  summed = np.zeros((batch, clusters, channels), "float32")
  for b in range(batch):
    for i in range(length):
      summed[b, labels[b, i]] += values[b, i]  # sum (not mean) of assigned pixels
  x = test_utils.numpy_bn(summed, layer.retrieved_bn)
  x = x @ np.asarray(layer.output_projection.dense.kernel)
  expected = test_utils.numpy_bn(x, layer.output_projection.bn)
  assert got.shape == (batch, clusters, 5)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_update_starts_at_zero_and_config_round_trips():
  layer = kmeans_cross_attention.KMeansCrossAttention(3)
  a = np.eye(2, dtype="float32")[None, [0, 1, 1]]
  v = np.ones((1, 3, 4), "float32")
  np.testing.assert_array_equal(np.asarray(layer(a, v)), np.zeros((1, 2, 3)))
  clone = kmeans_cross_attention.KMeansCrossAttention.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
