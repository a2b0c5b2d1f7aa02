"""ONNX: tf2onnx converts the portable serving graph; onnxruntime runs it.

The model file holds the weights and the merge; `metadata_props["deeplab2_kmax"]` the
labels and export size (`metadata.py`). Opset 18 (onnxruntime >= 1.14).
"""

import logging
from typing import Dict, Optional

import numpy as np

from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.app.export_formats import metadata as metadata_lib
from deeplab2_kmax.app.export_formats.runtimes import require
from deeplab2_kmax.app.export_formats.signature import INPUT_NAMES

NAME = "onnx"
FILE_NAME = "model.onnx"
OPSET = 18


def convert(serving, path: str, metadata: str) -> str:
  """Writes `serving.function` (a `PortableServing`) as an ONNX model at `path`."""
  tf2onnx = require("tf2onnx")
  onnx = require("onnx")
  logging.getLogger("tf2onnx").setLevel(logging.ERROR)
  function = serving.function
  proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                           opset=OPSET)
  entry = proto.metadata_props.add()
  entry.key, entry.value = metadata_lib.KEY, metadata
  onnx.save(proto, path)
  return path


class Runner:
  """onnxruntime's CPU execution provider on an exported model.

  `runner(images uint8 [B, H, W, 3], image_size int32 [B, 2])` -> {output name: array}.
  threads: intra-op threads (0: onnxruntime's default, one per core).
  """

  def __init__(self, path: str, threads: int = 0, session_options: Optional[object] = None):
    ort = require("onnxruntime")
    options = session_options or ort.SessionOptions()
    if threads:
      options.intra_op_num_threads = threads
    self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    custom = self.session.get_modelmeta().custom_metadata_map
    if metadata_lib.KEY not in custom:
      raise UserError(f"{path}: no {metadata_lib.KEY} metadata (not exported by "
                      "deeplab2_kmax.export)")
    self.metadata = metadata_lib.parse(custom[metadata_lib.KEY], path)
    self.output_names = [o.name for o in self.session.get_outputs()]
    self.device = "onnxruntime CPUExecutionProvider"

  def __call__(self, images: np.ndarray, image_size: np.ndarray) -> Dict[str, np.ndarray]:
    feed = dict(zip(INPUT_NAMES, (np.asarray(images, np.uint8),
                                  np.asarray(image_size, np.int32))))
    return dict(zip(self.output_names, self.session.run(self.output_names, feed)))
