"""Formulations for code compiled by XLA (XLA:CPU), where XLA lowers an op poorly.

Under `tf.function(jit_compile=True)` every op goes through XLA, which lowers a
depthwise convolution (an HLO `convolution` with `feature_group_count` = channels) on
CPU to a naive single-threaded loop nest instead of a library kernel. The kMaX heads
run seven 5×5 depthwise convs over 256 channels (on the 161² / 81² / 41² maps of a
641² input); under XLA those took ~485 ms of the R50 forward, versus ~18 ms for
oneDNN's kernel in graph mode (one 161²×256 5×5 depthwise conv: 517 ms XLA vs 7.8 ms
graph, 2 Zen 5 cores). Written as a sum of k² shifted slices of the padded input
times the per-channel tap weights, XLA fuses the whole conv into one vectorized,
multi-threaded loop: 12.9 ms for the same conv (4.2 ms at 81², 1.5 ms at 41²).
R50 COCO forward under XLA, interleaved with graph mode in one process (medians, busy
2-core machine): 641² 1.375 → 0.916 s (graph 0.923 s), 1281² 6.44 → 3.85 s (graph
3.98 s). ConvNeXt's 7×7 depthwise convs gain alike (161²×96: 226 → 6.7 ms).

Graph mode keeps the library op: the shifted sum is k² unfused passes over the
activation there (138 ms at 161²). So `compiled_by_xla` picks the formulation; it is
True while tracing under `jit_compile=True` on the TensorFlow backend (TF's own
XLA control-flow context that `tf.function` enters for such a trace) and always on
JAX (which compiles everything with XLA).
"""

import keras
from keras import ops


def compiled_by_xla() -> bool:
  """Whether the ops being built now will be compiled by XLA.

  TensorFlow: True inside the trace of a `tf.function(jit_compile=True)` (also when
  nested in a plain tf.function), False in eager and plain graph mode.
  """
  backend = keras.backend.backend()
  if backend == "jax":
    return True
  if backend != "tensorflow":
    return False
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  if tf.executing_eagerly():
    return False
  return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def tf_library_kernels() -> bool:
  """Whether ops built now run as TensorFlow's own kernels: TF backend, outside XLA.

  The condition of the TF-only fast paths that replace an op or its gradient by
  another TF kernel (depthwise_gradient, resize). False while the model is traced for
  another runtime (`portable_ops.portable_graph()`).
  """
  from deeplab2_kmax.layers import portable_ops  # pylint: disable=g-import-not-at-top
  return (keras.backend.backend() == "tensorflow" and not compiled_by_xla()
          and not portable_ops.active())


def _cpu_only() -> bool:
  """Whether this process computes on CPUs only (no GPU/TPU for TF, or JAX on cpu)."""
  backend = keras.backend.backend()
  if backend == "jax":
    import jax  # pylint: disable=g-import-not-at-top
    return jax.default_backend() == "cpu"
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return not (tf.config.list_logical_devices("GPU") or
              tf.config.list_logical_devices("TPU"))


def use_shifted_depthwise(training: bool) -> bool:
  """Whether a stride-1 depthwise conv should be `shifted_depthwise_conv` now.

  At inference whenever XLA compiles it. In training only when XLA compiles for CPUs:
  there the autodiff of the shifted sum (slices, pads and per-tap reductions, all
  fused by XLA) replaces XLA:CPU's naive loops for the depthwise conv and both its
  gradients (a 5×5 conv on 129²×256, forward + backward under jit_compile: 717 ->
  132 ms; 33²×256: 63 -> 11 ms); accelerators keep their library kernels for training.
  """
  if not compiled_by_xla():
    return False
  return not training or _cpu_only()


def _tap_slice(offset: int, total_pad: int):
  """Slice of a padded axis that starts `offset` in and drops `total_pad` overall.

  Static bounds (the end counts from the back), so dynamic spatial sizes work.
  """
  end = offset - total_pad
  return slice(offset, end if end < 0 else None)


def odd_square_kernel_size(kernel, caller: str) -> int:
  """k of a [k, k, C, 1] depthwise kernel (depth multiplier 1, k odd), else ValueError."""
  k = int(kernel.shape[0])
  if kernel.shape[1] != k or k % 2 != 1 or kernel.shape[-1] != 1:
    raise ValueError(f"{caller}: need a square odd k×k×C×1 kernel, got "
                     f"{kernel.shape}.")
  return k


def shifted_depthwise_conv(x, kernel, dilation_rate: int = 1, bias=None):
  """Stride-1 'same' depthwise conv of NHWC `x` as a sum of shifted slices.

  Equals `ops.depthwise_conv(x, kernel, 1, "same", dilation_rate=dilation_rate)`
  (+ `bias`) up to float rounding (the taps are summed in another order).

  Args:
    x: [B, H, W, C].
    kernel: [k, k, C, 1] (depth multiplier 1), k odd.
    dilation_rate: int.
    bias: optional [C], added at the end (fused into the same loop).
  """
  k = odd_square_kernel_size(kernel, "shifted_depthwise_conv")
  d = int(dilation_rate)
  pad = (k // 2) * d
  kernel = ops.cast(kernel, x.dtype)
  xp = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]) if pad else x
  y = None
  for i in range(k):
    rows = xp[:, _tap_slice(i * d, 2 * pad)]
    for j in range(k):
      term = rows[:, :, _tap_slice(j * d, 2 * pad)] * kernel[i, j, :, 0]
      y = term if y is None else y + term
  if bias is not None:
    y = y + ops.cast(bias, x.dtype)
  return y
