"""Tests for axial attention and the axial block."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.kernels import policy
from deeplab2_kmax.layers import axial_attention


def _numpy_axial_1d(layer, x):
  """Reference forward of AxialAttention1D in inference mode."""
  def bn(t, bn_layer, axis):
    gamma, beta, mean, var = [np.asarray(w) for w in bn_layer.weights]
    shape = [1] * t.ndim
    shape[axis] = -1
    r = lambda a: a.reshape(shape)
    return (t - r(mean)) / np.sqrt(r(var) + bn_layer.epsilon) * r(gamma) + r(beta)

  h = layer.num_heads
  dk, dv = layer.key_depth // h, layer.value_depth // h
  b, length, _ = x.shape
  qkv = bn(x @ np.asarray(layer.qkv_kernel), layer.qkv_bn, -1)
  q = qkv[..., :layer.key_depth].reshape(b, length, h, dk)
  k = qkv[..., layer.key_depth:2 * layer.key_depth].reshape(b, length, h, dk)
  v = qkv[..., 2 * layer.key_depth:].reshape(b, length, h, dv)
  idx = np.clip(np.arange(length)[None, :] - np.arange(length)[:, None],
                -(layer.max_span - 1), layer.max_span - 1) + layer.max_span - 1
  rq, rk, rv = (np.asarray(t)[idx] for t in
                (layer.query_rpe, layer.key_rpe, layer.value_rpe))
  logits = bn(np.einsum("blhd,bmhd->bhlm", q, k), layer.similarity_bns[0], 1)
  logits += bn(np.einsum("blhd,lmd->bhlm", q, rq), layer.similarity_bns[1], 1)
  logits += bn(np.einsum("bmhd,lmd->bhlm", k, rk), layer.similarity_bns[2], 1)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = bn(np.einsum("bhlm,bmhd->blhd", w, v).reshape(b, length, -1),
           layer.content_bn, -1)
  out += bn(np.einsum("bhlm,lmd->blhd", w, rv).reshape(b, length, -1),
            layer.value_rpe_bn, -1)
  return out


def _randomize_bn(layer, rng):
  for w in layer.weights:
    if "moving_variance" in w.path or "gamma" in w.path:
      w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    elif "moving_mean" in w.path or "beta" in w.path:
      w.assign(rng.normal(0, 0.2, w.shape).astype("float32"))


def test_axial_1d_matches_numpy_reference_with_clipped_span():
  rng = np.random.default_rng(0)
  layer = axial_attention.AxialAttention1D(8, 16, num_heads=2, max_span=4)
  x = rng.normal(size=(3, 7, 5)).astype("float32")
  layer(x)
  _randomize_bn(layer, rng)
  got = np.asarray(layer(x, training=False))
  np.testing.assert_allclose(got, _numpy_axial_1d(layer, x), rtol=1e-4, atol=1e-4)
  # Tables: 2 * max_span - 1 rows, shared by the heads.
  assert tuple(layer.query_rpe.shape) == (7, 4)
  assert tuple(layer.value_rpe.shape) == (7, 8)


def test_axial_block_parameter_layout_matches_deeplab2():
  w, cin = 16, 40
  block = axial_attention.AxialBlock(w, num_heads=8)
  y = block(np.zeros((1, 5, 6, cin), "float32"))
  assert y.shape == (1, 5, 6, 4 * w)
  mid = 2 * w
  attn_1d = (mid * 4 * w + 2 * 4 * w + 3 * 8 * 2 + 2 * 2 * 2 * w
             + 509 * (w // 8) * 2 + 509 * (2 * w // 8))
  expected = (cin * mid + 2 * mid) + 2 * attn_1d + (2 * w * 4 * w + 2 * 4 * w) \
      + (cin * 4 * w + 2 * 4 * w)  # shortcut since cin != 4w
  trainable = sum(int(np.prod(v.shape)) for v in block.trainable_weights)
  assert trainable == expected


def test_axial_block_stride_and_residual_zero_init():
  block = axial_attention.AxialBlock(4, num_heads=2, strides=2, activation="relu")
  x = np.random.default_rng(1).normal(size=(2, 33, 17, 16)).astype("float32")
  y = block(x, training=True)
  assert y.shape == (2, 17, 9, 16)
  # conv3's BN scale starts at zero, so at init the block is its shortcut.
  block_same = axial_attention.AxialBlock(4, num_heads=2, activation="relu",
                                          activate_input=False)
  x2 = x[..., :16]
  np.testing.assert_allclose(np.asarray(block_same(x2, training=False)), x2,
                             atol=1e-6)


def test_dynamic_shapes_and_xla_match_eager():
  block = axial_attention.AxialBlock(4, num_heads=2, drop_path_rate=0.2)
  x = np.random.default_rng(2).normal(size=(2, 9, 5, 16)).astype("float32")
  eager = np.asarray(block(x, training=False))
  spec = tf.TensorSpec([None, None, None, 16], tf.float32)
  graph = tf.function(lambda t: block(t, training=False), input_signature=[spec])
  xla = tf.function(lambda t: block(t, training=False), jit_compile=True)
  np.testing.assert_allclose(graph(x).numpy(), eager, atol=1e-4)
  np.testing.assert_allclose(xla(x).numpy(), eager, atol=1e-4)
  x_other = np.zeros((1, 3, 11, 16), "float32")
  assert graph(x_other).shape == (1, 3, 11, 16)


@pytest.mark.parametrize("cls,kwargs,shape", [
    (axial_attention.AxialAttention1D, dict(key_depth=8, value_depth=16,
                                            num_heads=2, max_span=9), (1, 5, 4)),
    (axial_attention.AxialAttention2D, dict(filters=8, num_heads=2,
                                            strides=2), (1, 5, 6, 4)),
    (axial_attention.AxialBlock, dict(filters=4, num_heads=2, drop_path_rate=0.1,
                                      norm_config={"synchronized": True}),
     (1, 5, 6, 16)),
])
def test_get_config_round_trip(cls, kwargs, shape):
  layer = cls(**kwargs)
  x = np.random.default_rng(3).normal(size=shape).astype("float32")
  y = layer(x)
  clone = cls.from_config(layer.get_config())
  clone(x)
  assert clone.get_config() == layer.get_config()
  clone.set_weights(layer.get_weights())
  np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(y), atol=1e-6)


@pytest.mark.parametrize("rpe", [(True, True, True), (False, True, False),
                                 (True, False, True), (False, False, False)])
def test_folded_inference_equals_unfolded_bn_path(rpe):
  rng = np.random.default_rng(5)
  layer = axial_attention.AxialAttention1D(
      8, 16, num_heads=2, max_span=5, use_query_rpe=rpe[0], use_key_rpe=rpe[1],
      use_value_rpe=rpe[2])
  x = rng.normal(size=(2, 9, 6)).astype("float32")
  layer(x)
  _randomize_bn(layer, rng)
  folded = np.asarray(layer(x, training=False))
  # The plain path: each BN with its moving statistics.
  with policy.forced(False):
    unfolded = np.asarray(layer(x, training=False))
  np.testing.assert_allclose(folded, unfolded, rtol=1e-4, atol=1e-4)


def test_training_gradient_graph_has_no_broadcast_projection_or_slice_grads():
  # The qkv projection is one 2-D MatMul (a broadcasting BatchMatMulV2 would take B
  # kernel-gradient products and a Sum) and q/k/v come from one split (slices would
  # add zero-padded StridedSliceGrads).
  layer = axial_attention.AxialAttention1D(8, 8, num_heads=2, max_span=5)
  x = tf.random.stateless_normal([3, 6, 4], [0, 4])
  layer(x, training=True)

  def step(t):
    with tf.GradientTape() as tape:
      tape.watch(t)
      y = layer(t, training=True)
      loss = tf.reduce_sum(y * y)
    grads = tape.gradient(loss, [t] + layer.trainable_variables)
    assert all(g is not None for g in grads)
    return grads

  graph = tf.function(step).get_concrete_function(x).graph
  op_types = [op.type for op in graph.get_operations()]
  assert "FusedBatchNormGradV3" in op_types  # the backward pass is in the graph
  assert "StridedSliceGrad" not in op_types
  assert "SplitV" in op_types and "MatMul" in op_types
  kernel_shape = tuple(layer.qkv_kernel.shape)
  assert not any(op.type == "BatchMatMulV2" and
                 any(tuple(i.shape) == kernel_shape for i in op.inputs)
                 for op in graph.get_operations())
