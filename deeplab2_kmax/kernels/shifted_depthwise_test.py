"""Tests for the XLA-only formulations."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from deeplab2_kmax.kernels import policy
from deeplab2_kmax.kernels import shifted_depthwise


def test_compiled_by_xla_only_under_jit_compile():
  flag = lambda: tf.constant(policy.compiled_by_xla())
  assert not policy.compiled_by_xla()  # eager
  assert not tf.function(flag)().numpy()
  assert tf.function(flag, jit_compile=True)().numpy()
  inner = tf.function(flag, jit_compile=True)
  assert tf.function(lambda: inner())().numpy()  # XLA function inside a graph
  xla_outer = tf.function(lambda: tf.function(flag)(), jit_compile=True)
  assert xla_outer().numpy()  # plain function inside an XLA one


@pytest.mark.parametrize("kernel_size,dilation,shape", [
    (5, 1, (2, 9, 7, 6)), (3, 2, (1, 6, 8, 4)), (5, 3, (1, 4, 5, 3)), (1, 1, (1, 3, 3, 2)),
])
def test_shifted_depthwise_conv_equals_depthwise_conv(kernel_size, dilation, shape):
  rng = np.random.default_rng(kernel_size * 10 + dilation)
  x = rng.normal(size=shape).astype("float32")
  kernel = rng.normal(size=(kernel_size, kernel_size, shape[-1], 1)).astype("float32")
  bias = rng.normal(size=shape[-1]).astype("float32")
  ref = np.asarray(ops.depthwise_conv(x, kernel, 1, "same",
                                      dilation_rate=dilation)) + bias
  fn = lambda a: shifted_depthwise.shifted_depthwise_conv(a, kernel, dilation, bias)
  np.testing.assert_allclose(np.asarray(fn(x)), ref, rtol=1e-5, atol=1e-5)
  got = tf.function(fn, jit_compile=True)(tf.constant(x))
  np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)
  # Unknown spatial sizes: the slices have static bounds.
  spec = tf.TensorSpec([None, None, None, shape[-1]], tf.float32)
  got = tf.function(fn, input_signature=[spec])(tf.constant(x))
  np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_shifted_depthwise_conv_rejects_other_kernels():
  with pytest.raises(ValueError):
    shifted_depthwise.shifted_depthwise_conv(np.zeros((1, 4, 4, 2), "float32"),
                                     np.zeros((4, 4, 2, 1), "float32"))
  with pytest.raises(ValueError):
    shifted_depthwise.shifted_depthwise_conv(np.zeros((1, 4, 4, 2), "float32"),
                                     np.zeros((3, 3, 2, 2), "float32"))


def test_use_shifted_depthwise_in_training_only_on_cpu(monkeypatch):
  use = lambda training: tf.constant(shifted_depthwise.use_shifted_depthwise(training))
  assert not tf.function(lambda: use(False))().numpy()  # graph mode: library conv
  assert tf.function(lambda: use(False), jit_compile=True)().numpy()
  assert tf.function(lambda: use(True), jit_compile=True)().numpy()  # CPU-only host
  monkeypatch.setattr(policy, "cpu_only", lambda: False)  # an accelerator
  assert tf.function(lambda: use(False), jit_compile=True)().numpy()
  assert not tf.function(lambda: use(True), jit_compile=True)().numpy()
