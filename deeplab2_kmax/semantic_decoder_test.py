"""Tests for the auxiliary semantic decoder."""

import numpy as np

from deeplab2_kmax.layers import test_utils
from deeplab2_kmax import semantic_decoder


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
  x = np.random.default_rng(1).normal(size=(1, 9, 9, 3)).astype("float32")
  y = np.asarray(aspp(x))
  assert y.shape == (1, 9, 9, 4)
  # Pixel (8, 8) is outside the receptive field (±3) of every conv branch at (0, 0);
  # only the image-pooling branch carries its change there.
  x2 = x.copy()
  x2[0, 8, 8] += 10.0
  y2 = np.asarray(aspp(x2))
  assert np.abs(y2[0, 0, 0] - y[0, 0, 0]).max() > 1e-4
  aspp.pool_conv.bn.gamma.assign(np.zeros(4, "float32"))
  aspp.pool_conv.bn.beta.assign(np.zeros(4, "float32"))
  np.testing.assert_allclose(np.asarray(aspp(x2))[0, 0, 0],
                             np.asarray(aspp(x))[0, 0, 0], atol=1e-6)
  clone = semantic_decoder.ASPP.from_config(aspp.get_config())
  assert clone.get_config() == aspp.get_config()


def test_full_size_parameter_count():
  layer = semantic_decoder.SemanticDecoder(133)
  layer(_endpoints((256, 512, 1024, 2048), (3, 2, 1, 1)), training=False)
  count = test_utils.count_params(layer)
  assert abs(count - 15.9e6) / 15.9e6 < 0.02  # docs/PAPER.md §5: 15.9M (R50, training only)


def test_uses_pre_activation_stage5_like_deeplab2():
  # deeplab2's feature_semantic is the backbone's "stage5"; "res5" is the fallback.
  endpoints = _endpoints()
  for use_decoder in (True, False):
    layer = semantic_decoder.SemanticDecoder(
        3, use_decoder=use_decoder, aspp_channels=8, decoder_channels=8,
        low_level_channels=(4, 4), head_channels=8)
    res_only = np.asarray(layer(endpoints, training=False))
    with_stage5 = dict(endpoints, stage5=endpoints["res5"])
    with_stage5["res5"] = endpoints["res5"] * 0.0 + 7.0  # must be ignored now
    np.testing.assert_array_equal(np.asarray(layer(with_stage5, training=False)),
                                  res_only)
