"""Tests of the MAC counter (profiler + einsum) and the model_stats CLI pieces."""

import os

import keras
from keras import ops
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax import backbones
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
  rows = [{"gin_file": "configs/coco/kmax_r50.gin", "params": 56.58e6, "gmacs": 167.6,
           "parts": {"other": {"params": 0, "gmacs": 10.1}}},
          {"gin_file": "configs/cityscapes/kmax_r50.gin", "params": 50e6, "gmacs": 1.0}]
  table = model_stats.markdown_table(rows)
  assert ("| configs/coco/kmax_r50.gin | 56.58 | 57 | -0.7% | 167.6 | 168 | -0.2% | 10.1 |"
          in table)
  assert "| configs/cityscapes/kmax_r50.gin | 50.00 | – | – | 1.0 | – | – | – |" in table


TINY_BINDINGS = [
    'build_model.num_queries = 8', 'build_model.pixel_decoder_dims = (16, 8, 8, 8)',
    'build_model.pixel_decoder_blocks = (1, 1, 1, 1)', 'build_model.axial_num_heads = 2',
    'build_model.decoder_layers = (1, 1, 1)', 'build_model.decoder_channels = 16',
    'build_model.decoder_key_depth = 8', 'build_model.decoder_value_depth = 16',
    'build_model.decoder_num_heads = 2', 'build_model.ffn_channels = 16',
    'build_model.embedding_dim = 8', 'build_model.pixel_head_channels = 16',
    'build_model.semantic_channels = 8', 'build_model.semantic_low_level_channels = (8, 8)',
    'build_model.backbone_kwargs = {"depths": (1, 1, 1, 1), "width_multiplier": 0.125, '
    '"stem_width_multiplier": 0.25}']


def test_model_stats_on_a_tiny_config():
  stats = model_stats.stats_for_config(
      [os.path.join(model_stats.REPO_ROOT, "configs/coco/kmax_r50.gin")],
      TINY_BINDINGS, height=97, width=129, num_classes=5, breakdown=True)
  parts = stats["parts"]
  assert stats["num_classes"] == 5
  # inference params exclude exactly the semantic branch
  assert parts["semantic_branch"]["params"] > 0
  assert stats["params"] == stats["params_total"] - parts["semantic_branch"]["params"]
  assert stats["params"] == sum(p["params"] for name, p in parts.items()
                                if name != "semantic_branch")
  assert parts["semantic_branch"]["gmacs"] == 0.0  # not run at inference
  assert sum(p["gmacs"] for p in parts.values()) == pytest.approx(stats["gmacs"], abs=2e-3)
  # the backbone's share equals the MACs of the same backbone traced alone
  backbone = backbones.build_backbone("resnet50", depths=(1, 1, 1, 1),
                                      width_multiplier=0.125, stem_width_multiplier=0.25)
  backbone(np.zeros((1, 33, 33, 3), "float32"))
  graph = tf.function(lambda x: backbone(x, training=False)).get_concrete_function(
      tf.TensorSpec((1, 97, 129, 3), tf.float32)).graph
  alone = model_stats.graph_macs(graph)["total"] / 1e9
  assert parts["resnet50"]["gmacs"] == pytest.approx(alone, rel=0.01, abs=2e-3)
  # stem conv alone: 7x7x3x8 MACs at 49x65 outputs
  assert alone > 7 * 7 * 3 * 8 * 49 * 65 / 1e9


def test_cli_per_part_on_a_tiny_config():
  # The CLI (own process: absl flags) with --per_part prints one JSON line whose parts
  # add up to the totals.
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  argv = [sys.executable, "-m", "deeplab2_kmax.tools.model_stats",
          "--gin_file=" + os.path.join(model_stats.REPO_ROOT, "configs/coco/kmax_r50.gin"),
          "--height=65", "--width=65", "--num_classes=5", "--per_part"]
  argv += [f"--gin_bindings={b}" for b in TINY_BINDINGS]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(argv, capture_output=True, text=True, check=True,
                          cwd=model_stats.REPO_ROOT, env=env, timeout=300)
  stats = json.loads(result.stdout.strip().splitlines()[-1])
  parts = stats["parts"]
  assert {"resnet50", "pixel_decoder", "transformer_decoder", "prediction_head",
          "semantic_branch"} <= set(parts)
  assert stats["params"] == sum(p["params"] for name, p in parts.items()
                                if name != "semantic_branch")
  assert stats["params_total"] == sum(p["params"] for p in parts.values())
  assert sum(p["gmacs"] for p in parts.values()) == pytest.approx(stats["gmacs"],
                                                                   abs=2e-3)
