"""Tests for the auxiliary semantic decoder."""

import numpy as np

from deeplab2_kmax import semantic_decoder
from deeplab2_kmax.layers import test_utils


def _endpoints(channels=(8, 12, 16, 20), sizes=(9, 5, 3, 2), seed=0):
  rng = np.random.default_rng(seed)
  return {f"res{level}": rng.normal(size=(2, s, s, c)).astype("float32")
          for level, c, s in zip((2, 3, 4, 5), channels, sizes)}


def test_coco_and_cityscapes_variants_output_stride4_logits():
  endpoints = _endpoints()
  for use_decoder in (True, False):
    layer = semantic_decoder.SemanticDecoder(
        5, use_decoder=use_decoder, aspp_channels=8, decoder_channels=8,
        low_level_channels=(4, 4), head_channels=8)
    logits = layer(endpoints, training=True)
    assert tuple(logits.shape) == (2, 9, 9, 5)
    clone = semantic_decoder.SemanticDecoder.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
  # Dropout only in training: inference is deterministic.
  a = np.asarray(layer(endpoints, training=False))
  np.testing.assert_array_equal(a, np.asarray(layer(endpoints, training=False)))


def test_aspp_pooling_branch_is_global():
  aspp = semantic_decoder.ASPP(4, (1, 2, 3), dropout_rate=0.0)
  x = np.random.default_rng(1).normal(size=(1, 6, 7, 3)).astype("float32")
  y = aspp(x)
  assert tuple(y.shape) == (1, 6, 7, 4)
  pooled = np.asarray(aspp.pool_conv(x.mean(axis=(1, 2), keepdims=True)))
  assert pooled.shape == (1, 1, 1, 4)


def test_full_size_parameter_count():
  layer = semantic_decoder.SemanticDecoder(133)
  layer(_endpoints((256, 512, 1024, 2048), (3, 2, 1, 1)), training=False)
  count = test_utils.count_params(layer)
  assert abs(count - 15.9e6) / 15.9e6 < 0.02  # KMAX.md: 15.9M (R50, training only)
