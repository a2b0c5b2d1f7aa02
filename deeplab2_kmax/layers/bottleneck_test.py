"""Tests for the bottleneck residual block."""

import numpy as np

from deeplab2_kmax.layers import bottleneck
from deeplab2_kmax.layers import test_utils


def test_shapes_parameter_layout_and_zero_init():
  block = bottleneck.BottleneckBlock(4, activation="gelu")
  x = np.random.default_rng(0).normal(size=(2, 9, 7, 6)).astype("float32")
  y = block(x, training=False)
  assert tuple(y.shape) == (2, 9, 7, 16)
  expected = (6 * 4 + 8) + (9 * 4 * 4 + 8) + (4 * 16 + 32) + (6 * 16 + 32)
  assert test_utils.count_params(block) == expected
  # conv3's BN scale starts at zero: the block output is its (projected) shortcut.
  shortcut = np.asarray(block.shortcut(np.asarray(block._act(x)), training=False))
  np.testing.assert_allclose(np.asarray(y), shortcut, atol=1e-6)
  strided = bottleneck.BottleneckBlock(2, output_filters=8, strides=2,
                                       activation="relu", drop_path_rate=0.1)
  assert tuple(strided(x, training=True).shape) == (2, 5, 4, 8)
  clone = bottleneck.BottleneckBlock.from_config(strided.get_config())
  assert clone.get_config() == strided.get_config()
