"""Tests of the axial-ResNet-50 (MaX-S) backbone."""

import numpy as np
import pytest

from deeplab2_kmax.backbones import axial_resnet
from deeplab2_kmax.backbones import resnet
from deeplab2_kmax.layers import axial_attention

TINY = dict(depths=(1, 1, 2, 2), width_multiplier=0.125, stem_width_multiplier=0.25)


def _count(layer):
  return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def test_axial_blocks_sit_at_stride_16_and_32():
  model = axial_resnet.AxialResNet(**TINY)
  kinds = [[type(b) for b in blocks] for blocks in model.stages]
  assert kinds == [[resnet.Bottleneck], [resnet.Bottleneck],
                   [resnet.Bottleneck, axial_attention.AxialBlock],
                   [axial_attention.AxialBlock, axial_attention.AxialBlock]]
  first_res5 = model.stages[3][0]
  assert first_res5.strides == 2 and not first_res5.activate_input


@pytest.mark.parametrize("size", [65, 48])
def test_tiny_axial_resnet_shapes(size):
  model = axial_resnet.AxialResNet(**TINY)
  out = model(np.random.RandomState(0).randn(1, size, size, 3).astype("float32"))
  for key, stride, channels in [("stem", 2, 32), ("res2", 4, 32), ("res3", 8, 64),
                                ("res4", 16, 128), ("res5", 32, 256)]:
    side = -(-size // stride)
    assert tuple(out[key].shape) == (1, side, side, channels), key
  gelu = np.asarray(out["res5"])
  assert np.all(gelu >= -0.2)  # GeLU, not ReLU: small negatives allowed
  assert np.any(gelu < 0)


def test_maxs_param_count_matches_deeplab2():
  model = axial_resnet.AxialResNet()
  model(np.zeros((1, 33, 33, 3), "float32"))
  assert _count(model) == pytest.approx(41.34e6, rel=1e-3)


def test_maxs_drop_path_schedule():
  model = axial_resnet.AxialResNet(drop_path_rate=0.2, **TINY)
  rates = [b.drop_path_rate for blocks in model.stages for b in blocks]
  assert rates == pytest.approx([0.0, 0.0, 0.0, 0.15, 0.15, 0.2])


def test_get_config_round_trip():
  model = axial_resnet.AxialResNet(drop_path_rate=0.2, **TINY)
  x = np.random.RandomState(3).randn(1, 33, 33, 3).astype("float32")
  ref = model(x)
  clone = axial_resnet.AxialResNet.from_config(model.get_config())
  clone(x)
  clone.set_weights(model.get_weights())
  assert clone.get_config() == model.get_config()
  got = clone(x)
  np.testing.assert_allclose(np.asarray(got["res5"]), np.asarray(ref["res5"]),
                             atol=1e-4)
