"""Tests for the XLA-fused low-precision GeLU against the float32 formula."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special

from deeplab2_kmax.kernels import gelu as fused_gelu
from deeplab2_kmax.layers import normalization


def _reference(x):
  return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def _reference_grad(x):
  return 0.5 * (1.0 + special.erf(x / np.sqrt(2.0))) + x * np.exp(
      -0.5 * x * x) / np.sqrt(2.0 * np.pi)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_gelu_is_fused_and_matches_float64(dtype):
  x64 = np.linspace(-6, 6, 2 * 3 * 5 * 7).reshape(2, 3, 5, 7)
  x = tf.cast(x64, dtype)
  exact_in = np.asarray(tf.cast(x, tf.float64))  # the rounded inputs
  assert fused_gelu.applies(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = normalization.gelu(x)
  grad = tape.gradient(y, x)
  assert y.dtype == dtype and grad.dtype == dtype
  eps = 2.0 ** -8 if dtype == tf.bfloat16 else 2.0 ** -11  # one output rounding
  np.testing.assert_allclose(np.asarray(tf.cast(y, tf.float64)), _reference(exact_in),
                             rtol=eps, atol=1e-6)
  np.testing.assert_allclose(np.asarray(tf.cast(grad, tf.float64)),
                             _reference_grad(exact_in), rtol=eps, atol=eps)


def test_float32_keeps_the_graph_ops_and_works_inside_a_tf_function():
  x = tf.constant(np.linspace(-4, 4, 9), tf.float32)
  assert not fused_gelu.applies(x)
  np.testing.assert_allclose(np.asarray(normalization.gelu(x)),
                             _reference(np.linspace(-4, 4, 9)), atol=1e-6)
  fn = tf.function(lambda t: normalization.gelu(t))
  for size in (5, 8):  # new shapes: no retracing errors, still exact
    xb = tf.cast(tf.linspace(-3.0, 3.0, size), tf.bfloat16)
    np.testing.assert_allclose(np.asarray(tf.cast(fn(xb), tf.float64)),
                               _reference(np.asarray(tf.cast(xb, tf.float64))),
                               rtol=2.0 ** -8, atol=1e-6)
