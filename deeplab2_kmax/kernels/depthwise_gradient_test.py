"""The depthwise conv with the kernel gradient as a depthwise conv == TF's autodiff."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.kernels import depthwise_gradient
from deeplab2_kmax.layers import convolutions


def _value_and_grads(fn, x, kernel, bias, upstream):
  with tf.GradientTape() as tape:
    tape.watch([x, kernel, bias])
    y = fn(x, kernel, bias)
    loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
  return [y] + tape.gradient(loss, [x, kernel, bias])


def _reference(x, kernel, bias):
  return tf.nn.depthwise_conv2d(x, tf.cast(kernel, x.dtype), [1, 1, 1, 1],
                                "SAME") + tf.cast(bias, x.dtype)


@pytest.mark.parametrize("k,batch,size", [(3, 1, (9, 7)), (5, 2, (11, 13)),
                                          (7, 3, (8, 8)), (5, 1, (3, 4))])
def test_matches_autodiff_float32(k, batch, size):
  rng = np.random.default_rng(k + batch)
  x = tf.constant(rng.normal(size=(batch, *size, 6)).astype(np.float32))
  kernel = tf.constant(rng.normal(size=(k, k, 6, 1)).astype(np.float32))
  bias = tf.constant(rng.normal(size=(6,)).astype(np.float32))
  upstream = tf.constant(rng.normal(size=(batch, *size, 6)).astype(np.float32))
  want = _value_and_grads(_reference, x, kernel, bias, upstream)
  # Graph mode with unknown batch and spatial sizes (the folding uses dynamic shapes).
  spec = tf.TensorSpec([None, None, None, 6], tf.float32)
  fn = tf.function(lambda x: _value_and_grads(depthwise_gradient.depthwise_conv, x,
                                              kernel, bias, upstream),
                   input_signature=[spec])
  for got in (_value_and_grads(depthwise_gradient.depthwise_conv, x, kernel, bias,
                               upstream), fn(x)):
    for g, w in zip(got, want):
      np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-4)


def test_bfloat16_inputs_float32_kernel_gradient():
  rng = np.random.default_rng(0)
  x32 = rng.normal(size=(2, 17, 17, 8)).astype(np.float32)
  x = tf.cast(tf.constant(x32), tf.bfloat16)
  kernel = tf.constant(rng.normal(size=(5, 5, 8, 1)).astype(np.float32))
  bias = tf.zeros([8])
  upstream = tf.constant(rng.normal(size=(2, 17, 17, 8)).astype(np.float32))
  got = _value_and_grads(depthwise_gradient.depthwise_conv, x, kernel, bias, upstream)
  want = _value_and_grads(_reference, tf.cast(x, tf.float32), kernel, bias, upstream)
  assert got[0].dtype == tf.bfloat16 and got[2].dtype == tf.float32
  scale = np.abs(want[2].numpy()).max()
  np.testing.assert_allclose(got[2].numpy(), want[2].numpy(), atol=1e-2 * scale)


def test_separable_conv_training_path_uses_it_and_matches_keras_path(monkeypatch):
  keras.utils.set_random_seed(0)
  layer = convolutions.DepthwiseSeparableConv(8, 5, activation="relu")
  x = tf.random.normal([2, 12, 12, 6])
  layer(x, training=False)
  calls = []
  real = depthwise_gradient.depthwise_conv
  monkeypatch.setattr(depthwise_gradient, "depthwise_conv",
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  results = []
  for fast in (True, False):
    monkeypatch.setattr(depthwise_gradient, "applies", lambda *a, f=fast: f)
    with tf.GradientTape() as tape:
      y = layer(x, training=True)
      loss = tf.reduce_sum(y * y)
    results.append([y] + tape.gradient(loss, layer.trainable_variables))
  assert calls == [1]
  for got, want in zip(*results):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_applies_only_to_stride1_undilated_outside_xla():
  assert depthwise_gradient.applies(5, 1, 1)
  assert not depthwise_gradient.applies(5, 2, 1)
  assert not depthwise_gradient.applies(5, 1, 2)
  seen = []
  tf.function(lambda: seen.append(depthwise_gradient.applies(5, 1, 1)) or 0.0,
              jit_compile=True)()
  assert seen == [False]


def test_bad_kernels_are_refused_naming_the_function():
  from deeplab2_kmax.kernels import shifted_depthwise  # pylint: disable=g-import-not-at-top
  x = tf.zeros([1, 8, 8, 4])
  for shape in ((4, 4, 4, 1), (3, 5, 4, 1), (3, 3, 4, 2)):  # even, not square, mult 2
    with pytest.raises(ValueError, match=r"depthwise_conv: need a square odd"):
      depthwise_gradient.depthwise_conv(x, tf.zeros(shape))
    with pytest.raises(ValueError, match=r"shifted_depthwise_conv: need a square odd"):
      shifted_depthwise.shifted_depthwise_conv(x, tf.zeros(shape))
