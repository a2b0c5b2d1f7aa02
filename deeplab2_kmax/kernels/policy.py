"""The one switch for every fast path, and the facts it decides by.

The model's layers state the paper's math in their `call`. Faster forms of the same
math (batch norms folded into convolutions, TF's fused batch norm, native atrous
convolutions, depthwise convolutions as shifted-slice sums under XLA, a one-matmul
depthwise kernel gradient, TF's native align-corners resize, a fused GeLU, ...) live in
this package; each layer asks for its fast form first and falls back to the plain one.
Every fast form checks `enabled()` and the conditions it was measured under (backend,
XLA, device, training), so turning the switch off runs the plain math everywhere:

* environment: `KMAX_FAST_PATHS=0` (or false/off/no);
* gin: `fast_paths.enabled = False`;
* code: `with policy.forced(False): ...` (tests compare both).

The fast forms compute the same values up to float rounding (each has a test against
the plain form, and `kernels/fast_paths_test.py` compares whole models both ways).
"""

import contextlib
import os
from typing import Iterator, Optional

import gin
import keras

from deeplab2_kmax.kernels import portable_ops

ENV_VAR = "KMAX_FAST_PATHS"
_OFF = ("0", "false", "off", "no")
_forced: Optional[bool] = None


@gin.configurable
def fast_paths(enabled: bool = True) -> bool:
  """gin: `fast_paths.enabled = False` turns every fast path off."""
  return enabled


def enabled() -> bool:
  """Whether fast paths may be used (see the module docstring for the switches)."""
  if _forced is not None:
    return _forced
  if os.environ.get(ENV_VAR, "1").strip().lower() in _OFF:
    return False
  return bool(fast_paths())


@contextlib.contextmanager
def forced(value: bool) -> Iterator[None]:
  """Forces the switch on or off while the block runs (tracing included)."""
  global _forced
  previous, _forced = _forced, bool(value)
  try:
    yield
  finally:
    _forced = previous


def backend() -> str:
  return keras.backend.backend()


def compiled_by_xla() -> bool:
  """Whether the ops being built now will be compiled by XLA: always on JAX; on
  TensorFlow inside the trace of a `tf.function(jit_compile=True)` (also when nested in
  a plain tf.function), not in eager or plain graph mode."""
  name = backend()
  if name == "jax":
    return True
  if name != "tensorflow":
    return False
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  if tf.executing_eagerly():
    return False
  return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def tf_library_kernels() -> bool:
  """Whether ops built now run as TensorFlow's own kernels: TF backend, outside XLA and
  outside a trace for another runtime (`portable_ops.portable_graph()`)."""
  return (backend() == "tensorflow" and not compiled_by_xla()
          and not portable_ops.active())


def cpu_only() -> bool:
  """Whether this process computes on CPUs only (no GPU/TPU for TF, or JAX on cpu)."""
  if backend() == "jax":
    import jax  # pylint: disable=g-import-not-at-top
    return jax.default_backend() == "cpu"
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return not (tf.config.list_logical_devices("GPU") or
              tf.config.list_logical_devices("TPU"))
