"""Tests of the MAC counter (profiler + einsum) and the model_stats CLI pieces."""

import keras
from keras import ops
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.tools import model_stats


def test_einsum_macs():
  assert model_stats.einsum_macs("bhwc,cd->bhwd", [(1, 10, 10, 32), (32, 8)]) == 25600
  assert model_stats.einsum_macs("bhlm,bmhd->blhd",
                                 [(2, 8, 5, 5), (2, 5, 8, 4)]) == 2 * 8 * 5 * 5 * 4
  assert model_stats.einsum_macs("...c,cd->...d", [(3, 4, 6), (6, 2)]) == 3 * 4 * 6 * 2
  assert model_stats.einsum_macs("bij->bji", [(2, 3, 4)]) == 0
  with pytest.raises(ValueError, match="unknown dimension"):
    model_stats.einsum_macs("ab,bc->ac", [(None, 3), (3, 4)])


def test_graph_macs_counts_conv_depthwise_dense_einsum_and_batch_matmul():
  conv = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")
  depthwise = keras.layers.DepthwiseConv2D(5, padding="same", use_bias=False,
                                           name="depthwise")
  dense = keras.layers.Dense(32, use_bias=False, name="dense")
  kernel = tf.Variable(tf.ones((32, 8)))

  def forward(x):
    y = dense(depthwise(conv(x)))
    z = ops.einsum("bhwc,cd->bhwd", y, kernel)
    a = ops.reshape(z, (1, 100, 8))
    return ops.matmul(a, ops.transpose(a, (0, 2, 1)))

  graph = tf.function(forward).get_concrete_function(
      tf.TensorSpec((1, 10, 10, 3), tf.float32)).graph
  macs = model_stats.graph_macs(graph, parts=("conv", "dense"))
  expected = {"conv": 9 * 3 * 16 * 100, "depthwise": 25 * 16 * 100,
              "dense": 16 * 32 * 100, "einsum": 32 * 8 * 100,
              "batch_matmul": 100 * 100 * 8}
  assert macs["total"] == sum(expected.values())
  assert macs["einsum_added"] == expected["einsum"]
  assert macs["conv"] == expected["conv"]
  assert macs["dense"] == expected["dense"]


def test_markdown_table_relative_errors():
  rows = [{"gin_file": "configs/coco/kmax_r50.gin", "params": 56.58e6, "gmacs": 167.6},
          {"gin_file": "configs/cityscapes/kmax_r50.gin", "params": 50e6, "gmacs": 1.0}]
  table = model_stats.markdown_table(rows)
  assert "| configs/coco/kmax_r50.gin | 56.58 | 57 | -0.7% | 167.6 | 168 | -0.2% |" in table
  assert "| configs/cityscapes/kmax_r50.gin | 50.00 | – | – |" in table
