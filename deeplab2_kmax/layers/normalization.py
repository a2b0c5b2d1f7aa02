"""Normalization factory: batch norm (optionally synchronized) with deeplab2 defaults.

kMaX-DeepLab uses synchronized batch norm with momentum 0.99 and epsilon 1e-3 everywhere
(docs/PAPER.md §1). Layers take a `norm_config` dict (serializable, gin
bindable) and call `batch_norm(norm_config, ...)` to build their norm layers.
"""

from typing import Any, Mapping, Optional

import keras
from keras import ops

from deeplab2_kmax.kernels import batch_norm as batch_norm_kernels
from deeplab2_kmax.kernels import gelu as gelu_kernels

DEFAULT_NORM_CONFIG = {"momentum": 0.99, "epsilon": 1e-3, "synchronized": False}


def resolve_norm_config(norm_config: Optional[Mapping[str, Any]]) -> dict:
  """Returns a full norm config dict: defaults overridden by `norm_config`."""
  config = dict(DEFAULT_NORM_CONFIG)
  if norm_config:
    unknown = set(norm_config) - set(DEFAULT_NORM_CONFIG)
    if unknown:
      raise ValueError(f"Unknown norm_config keys {sorted(unknown)}; "
                       f"allowed: {sorted(DEFAULT_NORM_CONFIG)}")
    config.update(norm_config)
  return config


def batch_norm(norm_config: Optional[Mapping[str, Any]] = None,
               axis: int = -1,
               gamma_initializer: Any = "ones",
               name: Optional[str] = None) -> keras.layers.BatchNormalization:
  """Builds a BatchNormalization layer.

  Args:
    norm_config: dict with optional keys `momentum` (0.99), `epsilon` (1e-3) and
      `synchronized` (False; True gives cross-replica synchronized BN).
    axis: the feature axis.
    gamma_initializer: initializer of the scale (use "zeros" at the end of residual
      branches).
    name: layer name.
  """
  config = resolve_norm_config(norm_config)
  return BatchNormalization(
      axis=axis,
      momentum=config["momentum"],
      epsilon=config["epsilon"],
      synchronized=config["synchronized"],
      gamma_initializer=gamma_initializer,
      name=name)


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class BatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization whose training step may use TF's fused kernel.

  Same variables, config, outputs, gradients and moving-statistics updates as the Keras
  layer; the training-mode forward on TensorFlow goes through FusedBatchNormV3 when
  fast paths are on (kernels.batch_norm: one kernel forward and one backward instead of
  a dozen elementwise passes).
  """

  def call(self, inputs, training=None, mask=None):
    fast = batch_norm_kernels.fused_training_batch_norm(self, inputs, training, mask)
    if fast is not None:
      return fast
    return super().call(inputs, training=training, mask=mask)


def get_activation(name: Optional[str]):
  """Maps an activation name ('relu', 'gelu', 'none'/None, ...) to a function.

  'gelu' is the exact (erf) GeLU, as in deeplab2 (see `gelu`).
  """
  if name is None or name == "none":
    return lambda x: x
  if name == "gelu":
    return gelu
  return keras.activations.get(name)


_INV_SQRT2 = 0.7071067811865476


def gelu(x):
  """Exact GeLU, 0.5·x·(1 + erf(x/√2)), as deeplab2.

  Written with erf: TensorFlow's own exact GeLU goes through `erfc`, which has no
  vectorized CPU kernel and took twice as long (19 vs 9 ms on a 161×161×256 map; equal
  to 1e-6). Fast forms (a leaner gradient; a fused XLA kernel for bfloat16) in
  kernels.gelu.
  """
  fast = gelu_kernels.gelu(x)
  if fast is not None:
    return fast
  return 0.5 * x * (1.0 + ops.erf(x * _INV_SQRT2))
