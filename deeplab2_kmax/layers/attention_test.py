"""Tests for the multi-head attention operation."""

import numpy as np

from deeplab2_kmax.layers import attention
from deeplab2_kmax.layers import test_utils


def test_matches_numpy_reference():
  rng = np.random.default_rng(0)
  heads, dk, dv = 2, 3, 4
  q = rng.normal(size=(2, 5, heads, dk)).astype("float32")
  k = rng.normal(size=(2, 7, heads, dk)).astype("float32")
  v = rng.normal(size=(2, 7, heads, dv)).astype("float32")
  layer = attention.AttentionOperation(heads, heads * dv, activation="relu")
  layer(q, k, v)
  test_utils.randomize_batch_norms(layer, rng)
  got = np.asarray(layer(q, k, v, training=False))
  logits = test_utils.numpy_bn(np.einsum("blhd,bmhd->bhlm", q, k),
                               layer.similarity_bn, axis=1)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = np.einsum("bhlm,bmhd->blhd", w, v).reshape(2, 5, heads * dv)
  expected = np.maximum(test_utils.numpy_bn(out, layer.retrieved_bn), 0)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  # deeplab2 layout: similarity BN per head, retrieved BN per (head, channel).
  assert test_utils.count_params(layer) == 2 * heads + 2 * heads * dv
  clone = attention.AttentionOperation.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
