"""Tests for the kMaX prediction heads."""

import numpy as np

from deeplab2_kmax import heads
from deeplab2_kmax.layers import test_utils


def test_outputs_void_prior_and_temperature():
  rng = np.random.default_rng(0)
  pixels = rng.normal(size=(2, 5, 3, 12)).astype("float32")
  feats = rng.normal(size=(2, 6, 16)).astype("float32")
  head = heads.PredictionHead(7, embedding_dim=8, pixel_head_channels=16)
  out = head(pixels, feats, feats * 0.5, training=False)
  assert out["class_logits"].shape == (2, 6, 8)
  assert out["mask_logits"].shape == (2, 5, 3, 6)
  emb = np.asarray(out["pixel_embeddings"])
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)
  # Void is the last class with probability ≈ 0.9 at init (class kernel std 0.01).
  logits = np.asarray(out["class_logits"])
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(probs[..., -1], 0.9, atol=0.02)
  np.testing.assert_allclose(heads.void_prior_bias(8)[-1], np.log(7 * 9.0))
  # Fresh mask-logit BN (mean 0, var 1): logits = 0.1 * <pixel, mask embedding>.
  mask_emb = np.asarray(head.mask_head(feats * 0.5, training=False))
  expected = 0.1 * np.einsum("bhwd,bnd->bhwn", emb, mask_emb) / np.sqrt(1 + 1e-3)
  np.testing.assert_allclose(np.asarray(out["mask_logits"]), expected, atol=1e-5)
  # One scale and one offset shared by all masks.
  assert tuple(head.mask_logits_bn.gamma.shape) == (1,)
  clone = heads.PredictionHead.from_config(head.get_config())
  assert clone.get_config() == head.get_config()
  pixel_head = heads.PixelHead.from_config(head.pixel_head.get_config())
  assert pixel_head.get_config() == head.pixel_head.get_config()


def test_full_size_parameter_count():
  rng = np.random.default_rng(1)
  head = heads.PredictionHead(133)
  head(rng.normal(size=(1, 2, 2, 256)).astype("float32"),
       rng.normal(size=(1, 4, 256)).astype("float32"),
       rng.normal(size=(1, 4, 256)).astype("float32"))
  count = test_utils.count_params(head)
  assert abs(count - 0.17e6) / 0.17e6 < 0.03  # docs/PAPER.md §5: final heads 0.17M
  assert count == 173576
