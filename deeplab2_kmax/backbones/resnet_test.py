"""Tests of the ResNet backbone: strides, alignment, parameter count, config, drop path."""

import numpy as np
import pytest

from deeplab2_kmax.backbones import resnet

TINY = dict(depths=(1, 1, 1, 1), width_multiplier=0.125, stem_width_multiplier=0.25)


def _count(weights):
  return sum(int(np.prod(w.shape)) for w in weights)


@pytest.mark.parametrize("size", [65, 64])
def test_tiny_resnet_endpoint_shapes_and_strides(size):
  model = resnet.ResNet(**TINY)
  out = model(np.random.RandomState(0).randn(2, size, size, 3).astype("float32"))
  expected = {"stem": (2, 16), "stage1": (2, 16), "res2": (4, 32), "stage2": (4, 32),
              "res3": (8, 64), "res4": (16, 128), "res5": (32, 256)}
  for key, (stride, channels) in expected.items():
    side = -(-size // stride)  # ceil: DeepLab padding
    assert tuple(out[key].shape) == (2, side, side, channels), key
  # activated = relu(pre-activation)
  np.testing.assert_allclose(np.maximum(np.asarray(out["stage5"]), 0),
                             np.asarray(out["res5"]), rtol=1e-6)


def test_full_resnet50_matches_deeplab2_param_count():
  model = resnet.ResNet()
  model(np.zeros((1, 33, 33, 3), "float32"))
  # deeplab2 kmax_resnet50: 23.51M (= torchvision ResNet-50 without the classifier).
  assert _count(model.trainable_weights) == 23_508_032
  out_channels = model(np.zeros((1, 33, 33, 3), "float32"))["res5"].shape[-1]
  assert out_channels == 2048


def test_inception_stem_gelu_variant_builds():
  model = resnet.ResNet(stem_type="inception", activation="gelu", **TINY)
  out = model(np.zeros((1, 33, 33, 3), "float32"))
  assert out["stem"].shape == (1, 17, 17, 32)  # 2 × 64 × 0.25 channels
  assert _count(model.stem.trainable_weights) == (
      3 * 3 * 3 * 16 + 3 * 3 * 16 * 16 + 3 * 3 * 16 * 32 + 2 * (16 + 16 + 32))


def test_get_config_round_trip_gives_identical_network():
  model = resnet.ResNet(drop_path_rate=0.2, **TINY)
  x = np.random.RandomState(1).randn(1, 33, 33, 3).astype("float32")
  ref = model(x)
  clone = resnet.ResNet.from_config(model.get_config())
  clone(x)
  clone.set_weights(model.get_weights())
  got = clone(x)
  assert clone.get_config() == model.get_config()
  for key in ref:
    np.testing.assert_allclose(np.asarray(got[key]), np.asarray(ref[key]), atol=1e-5)


def test_linear_drop_path_schedule_matches_deeplab2():
  # keep prob 0.8 at the last stage → 1 - 0.2 * stage / 4, only at stride >= 16.
  assert resnet.linear_drop_path_rate(0.2, 8, 16) == 0.0
  assert resnet.linear_drop_path_rate(0.2, 16, 16) == pytest.approx(0.15)
  assert resnet.linear_drop_path_rate(0.2, 32, 16) == pytest.approx(0.2)
  model = resnet.ResNet(drop_path_rate=0.2, **TINY)
  rates = [block.drop_path_rate for blocks in model.stages for block in blocks]
  # first block of each stage works at its input stride 2/4/8/16
  assert rates == pytest.approx([0.0, 0.0, 0.0, 0.15])


def test_drop_path_is_active_only_in_training():
  model = resnet.ResNet(drop_path_rate=0.5, drop_path_beyond_stride=2,
                        depths=(2, 1, 1, 1), width_multiplier=0.125,
                        stem_width_multiplier=0.25)
  x = np.random.RandomState(2).randn(8, 33, 33, 3).astype("float32")
  a = np.asarray(model(x, training=False)["res5"])
  b = np.asarray(model(x, training=False)["res5"])
  np.testing.assert_array_equal(a, b)
  # make residual branches non-zero so dropping them is visible
  for blocks in model.stages:
    for block in blocks:
      block.conv3.bn.gamma.assign(np.ones(block.conv3.bn.gamma.shape, "float32"))
  eval_out = np.asarray(model(x, training=False)["res2"])
  train_outs = [np.asarray(model(x, training=True)["res2"]) for _ in range(3)]
  assert any(not np.allclose(t, eval_out, atol=1e-3) for t in train_outs)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="stem_type"):
    resnet.ResNet(stem_type="foo")
  with pytest.raises(ValueError, match="4 stage depths"):
    resnet.ResNet(depths=(1, 1, 1))
