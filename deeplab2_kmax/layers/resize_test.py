"""Tests for the align-corners bilinear resize."""

import numpy as np
import tensorflow as tf

from deeplab2_kmax.layers import resize


def _numpy_resize(x, out_h, out_w):
  def axis_weights(n_in, n_out):
    w = np.zeros((n_out, n_in))
    for o in range(n_out):
      c = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
      lo = int(np.floor(c))
      hi = min(lo + 1, n_in - 1)
      w[o, lo] += 1 - (c - lo)
      w[o, hi] += c - lo
    return w
  wh, ww = axis_weights(x.shape[1], out_h), axis_weights(x.shape[2], out_w)
  return np.einsum("oh,pw,bhwc->bopc", wh, ww, x)


def test_matches_numpy_reference_up_and_down():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 9, 3)).astype("float32")
  for size in [(9, 17), (3, 4), (5, 9), (1, 2), (13, 1)]:
    got = np.asarray(resize.resize_align_corners(x, size))
    np.testing.assert_allclose(got, _numpy_resize(x, *size), atol=1e-5)


def test_corners_and_stride_grid_are_exact():
  x = np.random.default_rng(1).normal(size=(1, 9, 9, 2)).astype("float32")
  y = np.asarray(resize.resize_align_corners(x, (33, 33)))
  np.testing.assert_allclose(y[:, ::4, ::4], x, atol=1e-5)  # 32k+1 alignment


def test_dynamic_shapes_graph_and_xla():
  x = np.random.default_rng(2).normal(size=(2, 3, 4, 2)).astype("float32")

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2]),
                                tf.TensorSpec([2], tf.int32)])
  def graph(t, size):
    return resize.resize_align_corners(t, (size[0], size[1]))

  xla = tf.function(lambda t: resize.resize_align_corners(t, (5, 7)),
                    jit_compile=True)
  expected = _numpy_resize(x, 5, 7)
  np.testing.assert_allclose(graph(x, tf.constant([5, 7])).numpy(), expected,
                             atol=1e-5)
  np.testing.assert_allclose(xla(x).numpy(), expected, atol=1e-5)


def test_graph_mode_native_kernel_equals_gather_form_with_gradients():
  # Outside XLA on TF the resize is TF's ResizeBilinear(align_corners=True); values
  # and input gradients equal the gather form (used under XLA / on JAX), in float32
  # and (to bfloat16 rounding) in bfloat16.
  rng = np.random.default_rng(3)
  x = tf.constant(rng.normal(size=(2, 5, 9, 3)).astype("float32"))
  w = tf.constant(rng.normal(size=(2, 17, 33, 3)).astype("float32"))

  def gather_form(t):
    return resize._resize_axis(resize._resize_axis(t, 17, 1), 33, 2)

  for dtype, tol in ((tf.float32, 1e-5), (tf.bfloat16, 5e-2)):
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      native = resize.resize_align_corners(tf.cast(x, dtype), (17, 33))
      reference = gather_form(tf.cast(x, dtype))
      native_loss = tf.reduce_sum(tf.cast(native, tf.float32) * w)
      reference_loss = tf.reduce_sum(tf.cast(reference, tf.float32) * w)
    assert native.dtype == dtype and native.shape == (2, 17, 33, 3)
    np.testing.assert_allclose(tf.cast(native, tf.float32).numpy(),
                               _numpy_resize(x.numpy(), 17, 33), atol=tol)
    np.testing.assert_allclose(tape.gradient(native_loss, x).numpy(),
                               tape.gradient(reference_loss, x).numpy(),
                               atol=tol * 10, rtol=tol)
  graph = tf.function(lambda t: resize.resize_align_corners(t, (9, 9)))
  ops_in = {op.type for op in graph.get_concrete_function(
      tf.TensorSpec([1, 5, 5, 2])).graph.get_operations()}
  assert "ResizeBilinear" in ops_in and "GatherV2" not in ops_in
  xla = tf.function(lambda t: resize.resize_align_corners(t, (9, 9)), jit_compile=True)
  ops_xla = {op.type for op in xla.get_concrete_function(
      tf.TensorSpec([1, 5, 5, 2])).graph.get_operations()}
  assert "ResizeBilinear" not in ops_xla
