"""Tests for the kMaX decoder layer and its four pixel-cluster interactions."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.layers import test_utils
from deeplab2_kmax import transformer_layer

TINY = dict(bottleneck_channels=16, key_depth=8, value_depth=16, num_heads=2,
            ffn_channels=32, embedding_dim=8, pixel_head_channels=16)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  pixels = rng.normal(size=(2, 5, 4, 12)).astype("float32")
  centers = rng.normal(size=(2, 6, 16)).astype("float32")
  return pixels, centers


@pytest.mark.parametrize("interaction", transformer_layer.INTERACTIONS)
def test_each_interaction_builds_and_runs(interaction):
  pixels, centers = _inputs()
  layer = transformer_layer.KMaXTransformerLayer(3, interaction=interaction,
                                                 drop_path_rate=0.2, **TINY)
  pixel_out, centers_out, prediction, assignment = layer(pixels, centers,
                                                         training=True)
  assert pixel_out.shape == pixels.shape and centers_out.shape == centers.shape
  if "kmeans" in interaction:
    assert prediction["class_logits"].shape == (2, 6, 4)
    assert prediction["mask_logits"].shape == (2, 5, 4, 6)
    assert prediction["pixel_embeddings"].shape == (2, 5, 4, 8)
    np.testing.assert_array_equal(
        assignment.numpy(), np.argmax(prediction["mask_logits"].numpy(), -1))
  else:
    assert prediction is None and assignment is None
  # Zero-initialized residual branches: only the dual-path layers touch pixels, and
  # only once their last BN scale is non-zero.
  np.testing.assert_array_equal(np.asarray(pixel_out), pixels)
  if interaction.startswith("dual_path"):
    layer.pixel_conv3.bn.gamma.assign(np.ones(12, "float32"))
    pixel_out, _, _, _ = layer(pixels, centers, training=False)
    assert np.abs(np.asarray(pixel_out) - pixels).max() > 1e-3
  clone = transformer_layer.KMaXTransformerLayer.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  with pytest.raises(ValueError, match="interaction"):
    transformer_layer.KMaXTransformerLayer(3, interaction="softmax", **TINY)


def test_argmax_assignment_has_no_gradient_but_heads_do():
  pixels, centers = _inputs(1)
  layer = transformer_layer.KMaXTransformerLayer(3, **TINY)
  layer(pixels, centers)
  test_utils.randomize_batch_norms(layer, np.random.default_rng(2))
  head_vars = layer.prediction_head.trainable_weights
  with tf.GradientTape(persistent=True) as tape:
    _, centers_out, prediction, _ = layer(pixels, centers, training=True)
    center_loss = tf.reduce_sum(centers_out ** 2)
    head_loss = tf.reduce_sum(prediction["mask_logits"] ** 2) + tf.reduce_sum(
        prediction["class_logits"] ** 2)
  # The centers depend on the head only through argmax → stop_gradient.
  grads = tape.gradient(center_loss, head_vars)
  assert all(g is None or not np.any(g.numpy()) for g in grads)
  # The k-means update itself is trained through the center loss.
  kmeans_grads = tape.gradient(center_loss, layer.kmeans_update.trainable_weights)
  assert all(g is not None and np.any(g.numpy()) for g in kmeans_grads)
  # The head is trained by its own (deep-supervision) loss.
  grads = tape.gradient(head_loss, head_vars)
  for var, grad in zip(head_vars, grads):
    assert grad is not None, var.path
    if var.path.endswith("projection/bias"):
      continue  # cancelled by the batch norm that follows it (training mode)
    assert np.abs(grad.numpy()).max() > 1e-5, var.path
