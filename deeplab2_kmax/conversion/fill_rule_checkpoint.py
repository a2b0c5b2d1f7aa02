"""deeplab2-format checkpoints with known, deterministic weights (tests and parity checks).

deeplab2's reference outputs for conversion checks were computed with every variable set
by a fixed rule of its checkpoint key and shape, so a checkpoint with exactly deeplab2's
keys and those values can be rebuilt from the key list alone (`manifest`: [{"key",
"shape"}], as `testdata/*/manifest.json.gz`). The rule, per variable:

  rng = numpy.random.default_rng(zlib.crc32(key)); name = key.split("/")[-3]
  fan_in = prod(shape[:-1]); N(s) = rng.standard_normal(shape) * s; U(a, b) likewise
  final class-head kernel (key starts with "transformer_class_head/_conv/kernel"):
      N(4 sqrt(1 / fan_in));  final mask-logit BN gamma: U(8, 12);
  k-means update BN moving_variance: U(0.5, 1.5) * 30000;
  otherwise by name: kernel / qkv_kernel N(sqrt(1 / fan_in)); depthwise_kernel
  N(sqrt(1 / (kh kw))); bias N(0.02); gamma U(0.8, 1.2); beta N(0.02);
  moving_mean N(0.1); moving_variance U(0.5, 1.5); embeddings N(0.2);
  cluster_centers N(1.0); layer_scale U(0.1, 0.5)
  (computed in float64, stored as float32).

`write(manifest, prefix)` writes such a checkpoint with TensorFlow's SaveV2 (keys exactly
as deeplab2 names them, no object graph), i.e. what `tf.train.load_checkpoint` shows for
a checkpoint deeplab2 saved itself.
"""

import gzip
import json
import math
import os
import zlib
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf


def value(key: str, shape: Sequence[int]) -> np.ndarray:
  """The float32 value of checkpoint variable `key` (see the module docstring)."""
  shape = tuple(int(s) for s in shape)
  rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
  name = key.split("/")[-3]
  fan_in = int(np.prod(shape[:-1])) if shape else 1
  normal = lambda s: rng.standard_normal(size=shape) * s
  uniform = lambda a, b: rng.uniform(a, b, size=shape)
  if key.startswith("transformer_class_head/_conv/kernel"):
    out = normal(4.0 * math.sqrt(1.0 / fan_in))
  elif key.startswith("pixel_space_mask_batch_norm/gamma"):
    out = uniform(8.0, 12.0)
  elif "_kmeans_memory_batch_norm_retrieved_value/moving_variance" in key:
    out = uniform(0.5, 1.5) * 30000.0
  elif name in ("kernel", "qkv_kernel"):
    out = normal(math.sqrt(1.0 / fan_in))
  elif name == "depthwise_kernel":
    out = normal(math.sqrt(1.0 / (shape[0] * shape[1])))
  else:
    rules = {"bias": lambda: normal(0.02), "gamma": lambda: uniform(0.8, 1.2),
             "beta": lambda: normal(0.02), "moving_mean": lambda: normal(0.1),
             "moving_variance": lambda: uniform(0.5, 1.5),
             "embeddings": lambda: normal(0.2), "cluster_centers": lambda: normal(1.0),
             "layer_scale": lambda: uniform(0.1, 0.5)}
    if name not in rules:
      raise ValueError(f"no fill rule for {key}")
    out = rules[name]()
  return np.asarray(out).astype(np.float32)


def load_manifest(path: str) -> List[Dict]:
  """[{"key", "shape"}] from a manifest (.json or .json.gz)."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    return json.load(f)


def write(manifest: List[Dict], prefix: str) -> int:
  """Writes the rule's values under deeplab2's keys to `prefix`; returns the count."""
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  keys = [e["key"] for e in manifest]
  tensors = [tf.constant(value(e["key"], e["shape"])) for e in manifest]
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=keys, shape_and_slices=[""] * len(keys),
                    tensors=tensors)
  return len(keys)
