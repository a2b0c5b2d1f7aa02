"""portable_ops: the export-time formulations equal the plain ones."""

import numpy as np
import tensorflow as tf
from keras import ops

from deeplab2_kmax.kernels import portable_ops
from deeplab2_kmax.layers import resize


def test_argmax_equals_keras_argmax_with_signed_zeros():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 5, 7)).astype(np.float32)
  x[0, 0] = [0.0, -0.0, 0.0, -0.0, -1.0, -2.0, -3.0]   # +0 first
  x[0, 1] = [-0.0, -0.0, 0.0, -1.0, -2.0, -3.0, -4.0]  # +0 after two -0
  x[0, 2] = [-0.0, -0.0, -1.0, -2.0, -3.0, -4.0, -5.0]  # only -0: the first one
  x[1, 0] = 5.0  # ties: the first index
  for dtype in ("float32", "bfloat16", "int32"):
    value = tf.cast(tf.constant(x), dtype)
    want = ops.cast(ops.argmax(value, axis=-1), "int32").numpy()
    with portable_ops.portable_graph():
      got = tf.function(lambda v: portable_ops.argmax(v, axis=-1))(value).numpy()
    np.testing.assert_array_equal(got, want, err_msg=dtype)
    if dtype != "int32":  # Keras ranks -0.0 below +0.0
      assert list(want[0, :3]) == [0, 2, 0], want[0, :3]


def test_portable_graph_is_scoped_and_leaves_no_bit_operations():
  assert not portable_ops.active()
  with portable_ops.portable_graph():
    with portable_ops.portable_graph():
      assert portable_ops.active()
    assert portable_ops.active()
  assert not portable_ops.active()

  def graph_ops(portable):
    def fn(x):
      if portable:
        with portable_ops.portable_graph():
          return portable_ops.argmax(x), resize.resize_align_corners(x, (9, 9))
      return portable_ops.argmax(x), resize.resize_align_corners(x, (9, 9))
    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec([1, 5, 5, 4]))
    return {op.type for op in concrete.graph.get_operations()}

  plain, portable = graph_ops(False), graph_ops(True)
  assert {"Bitcast", "BitwiseAnd", "ResizeBilinear"} <= plain
  assert not {"Bitcast", "BitwiseAnd", "ResizeBilinear"} & portable


def test_portable_resize_agrees_with_the_native_kernel():
  x = tf.random.stateless_normal([2, 5, 7, 3], seed=[1, 2])
  native = resize.resize_align_corners(x, (9, 13))
  with portable_ops.portable_graph():
    gathered = resize.resize_align_corners(x, (9, 13))
  np.testing.assert_allclose(gathered.numpy(), native.numpy(), atol=2e-6)
