"""Portable formulations: the model traced for another runtime (ONNX, LiteRT, OpenVINO).

The TensorFlow graph of the model holds two ops that the converters cannot take:

* `keras.ops.argmax` on floats (the k-means assignment, `kmeans_cross_attention`) tells
  -0.0 from +0.0 with `Bitcast` + `BitwiseAnd` of the sign bit (Keras' flush-to-zero
  fix): tf2onnx and OpenVINO have no `Bitcast`, LiteRT no `BitwiseAnd`. `argmax` below
  finds negative zeros as `x == 0 and 1 / x < 0` instead (1 / -0.0 = -inf), the same
  rule without bit operations, so the result equals Keras' bit for bit.
* TF's native `ResizeBilinear(align_corners=True)` (`kernels/resize.py`, the fast path
  outside XLA) becomes an ONNX `Resize` whose output size tf2onnx passes as a float
  scale, and floor(5 * float32(9 / 5)) = 8: the stride-32 map of a 129² input resized
  to 8 rows instead of 9. Under `portable_graph()` the resize keeps its gather form
  (`policy.tf_library_kernels()` is False), which every runtime holds and whose
  results agree with the native kernel's to float32 rounding.

`portable_graph()` is a context manager active while the export traces the model; the
default (training, evaluation, the SavedModel) keeps the plain TensorFlow forms.
"""

import contextlib
import threading

import keras
import numpy as np
from keras import ops

_STATE = threading.local()


def active() -> bool:
  """Whether ops built now are traced for a foreign runtime (inside `portable_graph`)."""
  return getattr(_STATE, "depth", 0) > 0


@contextlib.contextmanager
def portable_graph():
  """Trace the model with the portable formulations (nestable, per thread)."""
  _STATE.depth = getattr(_STATE, "depth", 0) + 1
  try:
    yield
  finally:
    _STATE.depth -= 1


def argmax(x, axis: int = -1):
  """int32 `keras.ops.argmax(x, axis)`; inside `portable_graph()` on TensorFlow, the
  same result without bit operations (see the module docstring)."""
  if not (active() and keras.backend.backend() == "tensorflow"):
    return ops.cast(ops.argmax(x, axis=axis), "int32")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = tf.convert_to_tensor(x)
  if x.dtype.is_floating:
    # Keras computes in at least float32 and moves -0.0 just below +0.0.
    if x.dtype != tf.float64:
      x = tf.cast(x, tf.float32)
    negative_zero = tf.logical_and(tf.equal(x, 0.0), tf.less(tf.math.reciprocal(x), 0.0))
    x = tf.where(negative_zero, tf.constant(-np.finfo(x.dtype.as_numpy_dtype).tiny,
                                            x.dtype), x)
  return tf.argmax(x, axis=axis, output_type=tf.int32)
