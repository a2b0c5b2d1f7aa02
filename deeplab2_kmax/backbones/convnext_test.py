"""Tests of the ConvNeXt backbone: strides, padding, parameter counts, config."""

import numpy as np
import pytest

from deeplab2_kmax.backbones import convnext

TINY = dict(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64))


def _count(layer):
  return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


@pytest.mark.parametrize("size", [65, 64, 50])
def test_tiny_convnext_endpoint_shapes(size):
  model = convnext.ConvNeXt(**TINY)
  out = model(np.random.RandomState(0).randn(2, size, size, 3).astype("float32"))
  # (1, 2) padding before the stride-4 stem, (0, 1) before each stride-2 conv.
  side = (size + 3 - 4) // 4 + 1
  for i, channels in enumerate(TINY["dims"]):
    if i:
      side = (side + 1 - 2) // 2 + 1
    assert tuple(out[f"res{i + 2}"].shape) == (2, side, side, channels)
    assert tuple(out[f"stage{i + 2}"].shape) == (2, side, side, channels)
  assert tuple(out["stage1"].shape) == tuple(out["stage2"].shape)
  if size == 65:  # 32k + 1 input → 2^-s·32k + 1 features
    assert [out[f"res{i}"].shape[1] for i in range(2, 6)] == [17, 9, 5, 3]
  assert "stem" not in out


def test_block_layer_scale_and_zero_init_identity():
  block = convnext.ConvNeXtBlock(8, layer_scale_init_value=0.0)
  x = np.random.RandomState(1).randn(1, 5, 5, 8).astype("float32")
  block(x)
  assert block.gamma is None
  scaled = convnext.ConvNeXtBlock(8, layer_scale_init_value=1e-6)
  y = np.asarray(scaled(x))
  np.testing.assert_allclose(y, x, atol=1e-4)  # branch scaled by 1e-6
  assert _count(scaled) == (49 * 8 + 8) + 2 * 8 + (8 * 32 + 32) + (32 * 8 + 8) + 8


def test_drop_path_rates_grow_linearly():
  model = convnext.ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64),
                            drop_path_rate=0.4)
  rates = [b.drop_path_rate for blocks in model.stages for b in blocks]
  assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_get_config_round_trip():
  model = convnext.ConvNeXt(drop_path_rate=0.3, **TINY)
  x = np.random.RandomState(2).randn(1, 33, 33, 3).astype("float32")
  ref = model(x)
  clone = convnext.ConvNeXt.from_config(model.get_config())
  clone(x)
  clone.set_weights(model.get_weights())
  assert clone.get_config() == model.get_config()
  got = clone(x)
  for key in ref:
    np.testing.assert_allclose(np.asarray(got[key]), np.asarray(ref[key]), atol=1e-5)


def test_convnext_tiny_param_count():
  model = convnext.ConvNeXt(**convnext.CONVNEXT_PRESETS["convnext_tiny"])
  model(np.zeros((1, 33, 33, 3), "float32"))
  assert _count(model) == pytest.approx(27.82e6, rel=1e-3)


@pytest.mark.slow  # builds ~330M parameters (~15 s on 2 cores)
@pytest.mark.parametrize("name,expected", [("convnext_small", 49.45e6),
                                           ("convnext_base", 87.56e6),
                                           ("convnext_large", 196.23e6)])
def test_convnext_param_counts(name, expected):
  model = convnext.ConvNeXt(**convnext.CONVNEXT_PRESETS[name])
  model(np.zeros((1, 33, 33, 3), "float32"))
  assert _count(model) == pytest.approx(expected, rel=1e-3)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="4 depths"):
    convnext.ConvNeXt(depths=(1, 1, 1), dims=(8, 16, 32))


def test_tiny_convnext_under_xla_equals_graph():
  # Under jit_compile (inference) the 7x7 depthwise convs are shifted-slice sums
  # (kernels/shifted_depthwise); the endpoints must equal graph mode's library conv.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = convnext.ConvNeXt(**TINY, layer_scale_init_value=1.0)
  x = tf.constant(np.random.RandomState(3).randn(1, 37, 41, 3).astype("float32"))
  model(x)
  for w in model.weights:  # non-zero biases so that their path is checked too
    if "depthwise_conv" in w.path and "bias" in w.path:
      w.assign(np.random.RandomState(4).randn(*w.shape).astype("float32"))
  graph = tf.function(lambda a: model(a, training=False))(x)
  xla = tf.function(lambda a: model(a, training=False), jit_compile=True)(x)
  for key in ("res2", "res3", "res4", "res5"):
    np.testing.assert_allclose(xla[key].numpy(), graph[key].numpy(),
                               rtol=1e-4, atol=1e-4)
