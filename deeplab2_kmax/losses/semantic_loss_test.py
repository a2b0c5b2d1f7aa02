"""Semantic cross-entropy against numpy (all pixels, sampled, top-k)."""
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.losses import loss_test_data as data
from deeplab2_kmax.losses.semantic_loss import semantic_cross_entropy


def _case(seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(2, 20, 3)).astype(np.float32)
  targets = rng.integers(0, 3, size=(2, 20)).astype(np.int32)
  weights = rng.choice([0.0, 1.0, 2.0], size=(2, 20)).astype(np.float32)
  per_pixel = -np.take_along_axis(data.log_softmax(logits), targets[..., None],
                                  -1)[..., 0] * weights
  return logits, targets, weights, per_pixel


def test_all_pixels():
  logits, targets, weights, per_pixel = _case()
  expected = per_pixel.sum(-1) / (weights > 0).sum(-1)
  got = semantic_cross_entropy(logits, targets, weights).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sampled_pixels():
  logits, targets, weights, per_pixel = _case(1)
  indices = np.array([[0, 3, 5, 7], [1, 2, 19, 4]], np.int32)
  sel_loss = np.take_along_axis(per_pixel, indices, 1)
  sel_w = np.take_along_axis(weights, indices, 1)
  expected = sel_loss.sum(-1) / np.maximum((sel_w > 0).sum(-1), 1)
  expected[(sel_w > 0).sum(-1) == 0] = 0.0
  got = semantic_cross_entropy(logits, targets, weights, indices).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_top_k_percent_keeps_hardest_pixels():
  logits, targets, weights, per_pixel = _case(2)
  top = np.sort(per_pixel, -1)[:, ::-1][:, :5]      # 25% of 20 pixels
  expected = top.sum(-1) / (top > 0).sum(-1)
  got = semantic_cross_entropy(logits, targets, weights, top_k_percent=0.25)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
  with pytest.raises(ValueError):
    semantic_cross_entropy(logits, targets, weights, top_k_percent=0.0)


def test_fully_ignored_image_gives_zero():
  logits, targets, _, _ = _case(3)
  got = semantic_cross_entropy(logits, targets, tf.zeros([2, 20])).numpy()
  np.testing.assert_array_equal(got, [0.0, 0.0])
