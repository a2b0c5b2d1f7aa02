"""Choice of the tf.distribute strategy and the device-dependent defaults.

* `tpu` given            -> TPUStrategy (cluster resolver on that address, "local" works);
* TF_CONFIG with >1 task -> MultiWorkerMirroredStrategy (collective all-reduce);
* >1 local GPU (or --num_gpus > 1) -> MirroredStrategy over those GPUs;
* otherwise              -> the default strategy on the one device there is.
`devices` forces a MirroredStrategy over explicit devices (tests use 2 logical CPUs).

Under any strategy with more than one replica the model must use synchronized batch
norm (the trainer asks build_model for it, see train_lib.sync_batch_norm_bindings).
"""

import json
import os
from typing import Optional, Sequence

from absl import logging
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def _tf_config_num_tasks() -> int:
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    return 0
  try:
    cluster = json.loads(raw).get("cluster", {})
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
  return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))


def get_strategy(strategy: str = "auto", num_gpus: Optional[int] = None,
                 tpu: Optional[str] = None,
                 devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
  """Returns the strategy to train under (see the module docstring)."""
  if strategy not in STRATEGIES:
    raise ValueError(f"--strategy must be one of {STRATEGIES}, got {strategy!r}")
  if tpu or strategy == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    result = tf.distribute.TPUStrategy(resolver)
  elif strategy == "multi_worker" or (strategy == "auto" and _tf_config_num_tasks() > 1):
    if _tf_config_num_tasks() == 0 and strategy == "multi_worker":
      raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable")
    result = tf.distribute.MultiWorkerMirroredStrategy()
  elif devices:
    # Collective all-reduce between CPU devices of one process can mis-order the sync BN
    # and gradient collectives inside the multi-step loop; reduce through one device.
    cpu_only = all("cpu" in d.lower() for d in devices)
    result = tf.distribute.MirroredStrategy(
        devices=list(devices),
        cross_device_ops=tf.distribute.ReductionToOneDevice() if cpu_only else None)
  else:
    gpus = tf.config.list_physical_devices("GPU")
    if num_gpus is not None and num_gpus > len(gpus):
      raise ValueError(f"--num_gpus={num_gpus} but only {len(gpus)} GPUs are visible")
    count = len(gpus) if num_gpus is None else num_gpus
    if strategy == "mirrored" or count > 1:
      names = [f"/gpu:{i}" for i in range(count)] or None  # None: all local devices
      result = tf.distribute.MirroredStrategy(devices=names)
    else:
      result = tf.distribute.get_strategy()
  logging.info("strategy %s with %d replica(s)", type(result).__name__,
               result.num_replicas_in_sync)
  return result


def on_gpu() -> bool:
  return bool(tf.config.list_physical_devices("GPU"))


def default_jit_compile() -> bool:
  """XLA by default on GPU/TPU; off on CPU (a flag turns it on)."""
  return on_gpu() or bool(tf.config.list_logical_devices("TPU"))


def cpu_has_bfloat16() -> bool:
  """True when the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX-BF16).

  oneDNN then runs bf16 convolutions and matmuls ~1.5-2x faster than float32; without
  them bf16 is emulated and slower, so the trainer keeps float32.
  """
  try:
    with open("/proc/cpuinfo") as f:
      flags = f.read()
  except OSError:
    return False
  return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(mixed_precision: bool, jit_compile: bool = False) -> str:
  """The Keras dtype policy for --mixed_precision.

  GPU: mixed_float16 (with a loss-scaled optimizer). TPU: mixed_bfloat16. CPU:
  mixed_bfloat16 (float32 variables, bf16 compute through oneDNN, no loss scaling
  needed) when the CPU has native bf16 and the step is not XLA-compiled (bf16 together
  with XLA fails or is emulated on XLA:CPU); otherwise float32, with a warning.
  """
  if not mixed_precision:
    return "float32"
  if on_gpu():
    return "mixed_float16"
  if tf.config.list_logical_devices("TPU"):
    return "mixed_bfloat16"
  if jit_compile:
    logging.warning("--mixed_precision ignored with --jit_compile on CPU (bf16 is not "
                    "supported well by XLA:CPU): training in float32")
    return "float32"
  if not cpu_has_bfloat16():
    logging.warning("--mixed_precision ignored: this CPU has no native bfloat16 "
                    "(avx512_bf16/amx_bf16): training in float32")
    return "float32"
  return "mixed_bfloat16"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the process that writes summaries, metrics and the canonical checkpoint."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                          and "chief" not in resolver.cluster_spec().jobs)


def worker_model_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Non-chief workers must also write checkpoints (collectives); give them a temp dir."""
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, "workers", f"{resolver.task_type}_{resolver.task_id}")
