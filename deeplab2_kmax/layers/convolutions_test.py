"""Tests for the conv helpers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.kernels import conv as conv_kernels
from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import test_utils


def _assert_matches_keras_conv(layer, x, rtol, atol, training=False):
  """layer(x) and its gradients (input, kernel, bias) equal those of layer.conv(x)."""
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    fast, reference = layer(x, training=training), layer.conv(x)
    fast_loss = tf.reduce_sum(fast * fast)
    reference_loss = tf.reduce_sum(reference * reference)
  np.testing.assert_allclose(fast.numpy(), reference.numpy(), rtol=rtol, atol=atol)
  for source in (x, layer.conv.kernel, layer.conv.bias):
    np.testing.assert_allclose(
        tape.gradient(fast_loss, source).numpy(),
        tape.gradient(reference_loss, source).numpy(), rtol=10 * rtol, atol=10 * atol)
  return fast


def test_strided_conv_is_centred_on_stride_grid():
  # A 3x3 kernel that picks the centre tap: output (i, j) must equal input (2i, 2j).
  layer = convolutions.ConvBN(1, 3, strides=2, use_bn=False, use_bias=False)
  x = np.random.default_rng(0).normal(size=(1, 9, 7, 1)).astype("float32")
  layer(x)
  kernel = np.zeros((3, 3, 1, 1), "float32")
  kernel[1, 1] = 1.0
  layer.conv.kernel.assign(kernel)
  y = np.asarray(layer(x))
  assert y.shape == (1, 5, 4, 1)  # ceil(9/2), ceil(7/2)
  np.testing.assert_allclose(y, x[:, ::2, ::2], atol=1e-6)


def test_conv_bn_act_matches_reference():
  rng = np.random.default_rng(1)
  layer = convolutions.ConvBN(4, 1, activation="relu")
  x = rng.normal(size=(2, 3, 3, 5)).astype("float32")
  layer(x)
  test_utils.randomize_batch_norms(layer, rng)
  ref = np.maximum(test_utils.numpy_bn(x @ np.asarray(layer.conv.kernel)[0, 0],
                                       layer.bn), 0)
  np.testing.assert_allclose(np.asarray(layer(x)), ref, atol=1e-5)


def test_dense_bn_and_separable_shapes_and_counts():
  dense = convolutions.DenseBN(8, activation="gelu")
  assert dense(np.zeros((2, 5, 3), "float32")).shape == (2, 5, 8)
  assert test_utils.count_params(dense) == 3 * 8 + 2 * 8
  sep = convolutions.DepthwiseSeparableConv(6, 5, activation="gelu")
  assert sep(np.zeros((1, 7, 7, 4), "float32")).shape == (1, 7, 7, 6)
  assert test_utils.count_params(sep) == 25 * 4 + 2 * 4 + 4 * 6 + 2 * 6
  with pytest.raises(ValueError):
    convolutions.ConvBN(3, use_bias=True, use_bn=True)


@pytest.mark.parametrize("layer,shape", [
    (convolutions.ConvBN(3, 3, strides=2, dilation_rate=1, activation="gelu",
                         norm_config={"momentum": 0.9}), (1, 5, 5, 2)),
    (convolutions.DenseBN(3, bn_gamma_initializer="zeros"), (1, 4, 2)),
    (convolutions.DenseBN(3, use_bias=True, use_bn=False,
                          kernel_initializer=keras.initializers.TruncatedNormal(
                              stddev=0.01)), (1, 4, 2)),
    (convolutions.DepthwiseSeparableConv(3, 5, strides=2), (1, 5, 5, 2)),
])
def test_get_config_round_trip(layer, shape):
  x = np.random.default_rng(2).normal(size=shape).astype("float32")
  y = layer(x)
  clone = type(layer).from_config(layer.get_config())
  clone(x)
  clone.set_weights(layer.get_weights())
  assert clone.get_config() == layer.get_config()
  np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(y), atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: convolutions.ConvBN(4, 3, strides=2, activation="relu"),
    lambda: convolutions.ConvBN(4, 5, strides=2, use_bn=False, use_bias=True),
    lambda: convolutions.DepthwiseSeparableConv(4, 5, strides=2),
])
def test_strided_build_on_input_smaller_than_kernel(make):
  # Regression: build() used the unpadded shape, so a 3x3 stride-2 'valid' conv on a
  # 2x2 input failed ("output size would be zero or negative") although call() pads.
  layer = make()
  layer.build((1, 2, 2, 3))
  assert layer.built
  x = np.random.default_rng(3).normal(size=(1, 2, 2, 3)).astype("float32")
  y = np.asarray(layer(x))
  assert y.shape == (1, 1, 1, 4)  # ceil(2 / 2)
  # Symbolic build with unknown spatial dims works too.
  sym = make()
  out = sym(keras.Input((None, None, 3)))
  assert tuple(out.shape) == (None, None, None, 4)


def test_atrous_conv_wider_than_the_map_is_its_centre_tap():
  # Dilation >= height and width: every off-centre tap reads padding, so ConvBN runs
  # the 1x1 conv of the centre tap; outputs and gradients match the atrous conv.
  layer = convolutions.ConvBN(6, 3, dilation_rate=5, use_bn=False, use_bias=True)
  x = tf.random.stateless_normal([2, 5, 4, 3], [0, 1])
  layer(x)
  layer.conv.bias.assign(tf.range(6, dtype=tf.float32))
  assert conv_kernels.live_atrous_taps(3, 1, layer.dilation_rate, x) == [(1, 1)]
  assert conv_kernels.live_atrous_taps(3, 1, 5, tf.zeros([1, 6, 4, 3])) is None
  _assert_matches_keras_conv(layer, x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dilation,size", [(2, (7, 9)), (3, (5, 11))])
def test_atrous_conv_is_native_and_equals_the_keras_conv(dilation, size):
  # ConvBN's atrous conv is tf.nn.conv2d with native dilations (no SpaceToBatchND
  # detour); outputs and the gradients of input, kernel and bias equal Keras' Conv2D.
  layer = convolutions.ConvBN(5, 3, dilation_rate=dilation, use_bn=False,
                              use_bias=True)
  x = tf.random.stateless_normal([2, *size, 4], [0, 2])
  layer(x)
  layer.conv.bias.assign(tf.linspace(-1.0, 1.0, 5))
  assert conv_kernels.live_atrous_taps(3, 1, layer.dilation_rate, x) is None
  fast = _assert_matches_keras_conv(layer, x, rtol=1e-5, atol=1e-5)
  assert fast.shape == (2, *size, 5)
  graph = tf.function(lambda t: layer(t)).get_concrete_function(
      tf.TensorSpec([1, None, None, 4])).graph
  op_types = {op.type for op in graph.get_operations()}
  assert "SpaceToBatchND" not in op_types and "Conv2D" in op_types


@pytest.mark.parametrize("use_bn,dilation", [(True, 1), (False, 2)])
def test_separable_conv_under_xla_equals_graph(use_bn, dilation):
  # Under jit_compile the depthwise conv is a shifted-slice sum (kernels/shifted_depthwise); it must
  # give the library conv's numbers (graph mode), BN folded or conv bias.
  rng = np.random.default_rng(4)
  layer = convolutions.DepthwiseSeparableConv(6, 5, dilation_rate=dilation,
                                              use_bn=use_bn, activation="gelu")
  x = tf.constant(rng.normal(size=(2, 9, 11, 8)).astype("float32"))
  layer(x)
  test_utils.randomize_batch_norms(layer, rng)
  if not use_bn:
    layer.depthwise.bias.assign(rng.normal(size=8).astype("float32"))
  graph = tf.function(lambda a: layer(a, training=False))(x)
  xla = tf.function(lambda a: layer(a, training=False), jit_compile=True)(x)
  np.testing.assert_allclose(xla.numpy(), graph.numpy(), rtol=1e-5, atol=1e-5)
  assert float(tf.reduce_max(tf.abs(graph))) > 0.5


def test_separable_conv_training_under_xla_equals_graph_with_gradients():
  # Training under jit_compile on CPU differentiates the shifted-slice sum; output and
  # the gradients of input and depthwise kernel equal graph mode's library conv.
  rng = np.random.default_rng(5)
  layer = convolutions.DepthwiseSeparableConv(6, 5, activation="gelu")
  x = tf.constant(rng.normal(size=(2, 9, 11, 8)).astype("float32"))
  layer(x)

  def step(a):
    with tf.GradientTape() as tape:
      tape.watch(a)
      y = layer(a, training=True)
      loss = tf.reduce_sum(y * y)
    return (y, *tape.gradient(loss, [a, layer.depthwise.kernel]))

  graph = tf.function(step)(x)
  xla = tf.function(step, jit_compile=True)(x)
  for got, want in zip(xla, graph):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
  ops_xla = {op.type for op in tf.function(step, jit_compile=True)
             .get_concrete_function(x).graph.get_operations()}
  assert "DepthwiseConv2dNative" not in ops_xla


@pytest.mark.parametrize("size", [(9, 7), (8, 6), (1, 2)])
def test_strided_1x1_conv_subsamples_then_convolves(size):
  # A strided 1x1 ConvBN subsamples the stride grid and runs a stride-1 1x1 conv:
  # outputs and the gradients of input, kernel and bias equal Keras' strided Conv2D.
  layer = convolutions.ConvBN(5, 1, strides=2, use_bn=False, use_bias=True)
  x = tf.random.stateless_normal([2, *size, 3], [0, 3])
  layer(x)
  layer.conv.bias.assign(tf.linspace(-1.0, 1.0, 5))
  fast = _assert_matches_keras_conv(layer, x, rtol=1e-6, atol=1e-6, training=True)
  assert fast.shape == (2, -(-size[0] // 2), -(-size[1] // 2), 5)
  for training, want in ((True, [1, 1, 1, 1]), (False, [1, 2, 2, 1])):
    call = tf.function(lambda t, tr=training: layer(t, training=tr))
    graph = call.get_concrete_function(tf.TensorSpec([1, None, None, 3])).graph
    strides = [op.get_attr("strides") for op in graph.get_operations()
               if op.type == "Conv2D"]
    assert strides == [want]  # subsampled in training only
