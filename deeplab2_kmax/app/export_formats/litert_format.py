"""LiteRT (TensorFlow Lite): TF's converter on the portable serving graph, builtin ops
only; the LiteRT interpreter (`ai-edge-litert`) runs it.

The graph goes through a Keras `ExportArchive` SavedModel: converted from a plain
`tf.saved_model.save` of a Keras 3 model (or `from_concrete_functions` with it), TF
2.21's converter keeps every weight as an uninitialized resource variable (NaN outputs
under XNNPACK, READ_VARIABLE failures without it); the archive's are frozen. The
flatbuffer's `metadata` entry `deeplab2_kmax` holds the labels and export size.
"""

import os
import tempfile
from typing import Dict, Optional, Sequence

import numpy as np

from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.app.export_formats import metadata as metadata_lib
from deeplab2_kmax.app.export_formats.runtimes import require
from deeplab2_kmax.app.export_formats.signature import INPUT_NAMES

NAME = "litert"
FILE_NAME = "model.tflite"
SIGNATURE = "serving_default"


def convert_bytes(serving, optimizations: Sequence = (), supported_types: Sequence = ()):
  """The flatbuffer of `serving.function` (a `PortableServing`); optimizations /
  supported_types: the TFLiteConverter settings (e.g. [tf.lite.Optimize.DEFAULT] and
  [tf.float16] for float16 weights)."""
  import keras
  import tensorflow as tf

  with tempfile.TemporaryDirectory() as folder:
    archive = keras.export.ExportArchive()
    archive.track(serving.model)
    archive.add_endpoint(SIGNATURE, serving.function)
    archive.write_out(folder, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = list(optimizations)
    converter.target_spec.supported_types = list(supported_types)
    return converter.convert()


def add_metadata(model: bytes, name: str, value: bytes) -> bytes:
  """Appends a `metadata` entry (a named buffer) to a LiteRT flatbuffer."""
  from tensorflow.lite.python import schema_py_generated as schema
  from tensorflow.lite.tools import flatbuffer_utils

  obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
  buffer = schema.BufferT()
  buffer.data = np.frombuffer(value, np.uint8)
  obj.buffers.append(buffer)
  entry = schema.MetadataT()
  entry.name = name
  entry.buffer = len(obj.buffers) - 1
  obj.metadata = list(obj.metadata or []) + [entry]
  return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def read_metadata(model: bytes, name: str) -> Optional[bytes]:
  """The `metadata` buffer called `name` of a LiteRT flatbuffer (None if absent)."""
  from ai_edge_litert import schema_py_generated as schema

  root = schema.Model.GetRootAs(model, 0)
  for i in range(root.MetadataLength()):
    entry = root.Metadata(i)
    if entry.Name().decode() == name:
      return root.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
  return None


def convert(serving, path: str, metadata: str, **options) -> str:
  """Writes the LiteRT model of `serving` at `path`; options: see convert_bytes."""
  model = convert_bytes(serving, **options)
  with open(path, "wb") as f:
    f.write(add_metadata(model, metadata_lib.KEY, metadata.encode()))
  return path


class Runner:
  """The LiteRT interpreter (XNNPACK on CPU) on an exported model.

  `runner(images uint8 [B, H, W, 3], image_size int32 [B, 2])` -> {output name: array}.
  threads: interpreter threads (0: one per core).
  """

  def __init__(self, path: str, threads: int = 0):
    require("ai_edge_litert")
    from ai_edge_litert import interpreter as interpreter_lib
    with open(path, "rb") as f:
      model = f.read()
    text = read_metadata(model, metadata_lib.KEY)
    if text is None:
      raise UserError(f"{path}: no {metadata_lib.KEY} metadata (not exported by "
                      "deeplab2_kmax.export)")
    self.metadata = metadata_lib.parse(text.decode(), path)
    self.interpreter = interpreter_lib.Interpreter(
        model_content=model, num_threads=threads or os.cpu_count())
    self.runner = self.interpreter.get_signature_runner(SIGNATURE)
    self.device = "LiteRT interpreter (XNNPACK)"

  def __call__(self, images: np.ndarray, image_size: np.ndarray) -> Dict[str, np.ndarray]:
    feed = dict(zip(INPUT_NAMES, (np.asarray(images, np.uint8),
                                  np.asarray(image_size, np.int32))))
    return {k: np.array(v) for k, v in self.runner(**feed).items()}
