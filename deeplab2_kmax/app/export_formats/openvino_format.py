"""OpenVINO: `openvino.convert_model` on the portable serving graph (TF frontend);
the CPU plugin runs it.

Saved uncompressed (`save_model(compress_to_fp16=False)`: OpenVINO's default stores
float16 weights) and run with INFERENCE_PRECISION_HINT=f32 by default: on CPUs with
AVX512-BF16 / AMX the CPU plugin otherwise computes in bfloat16 (`precision="bf16"`
asks for it). `rt_info["deeplab2_kmax"]` holds the labels and export size.
"""

from typing import Dict

import numpy as np

from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.app.export_formats import metadata as metadata_lib
from deeplab2_kmax.app.export_formats.runtimes import require
from deeplab2_kmax.app.export_formats.signature import INPUT_NAMES, OUTPUTS

NAME = "openvino"
FILE_NAME = "model.xml"  # + model.bin beside it


def convert(serving, path: str, metadata: str, compress_to_fp16: bool = False) -> str:
  """Writes `serving.function` (a `PortableServing`) as OpenVINO IR at `path` (.xml)."""
  ov = require("openvino")
  model = ov.convert_model(serving.function)
  model.set_rt_info(metadata, [metadata_lib.KEY])
  ov.save_model(model, path, compress_to_fp16=compress_to_fp16)
  return path


class Runner:
  """OpenVINO's CPU plugin on an exported model.

  `runner(images uint8 [B, H, W, 3], image_size int32 [B, 2])` -> {output name: array}.
  precision: "f32" (default, what verification uses), "bf16" or "f16" (faster where
  the CPU has them). threads: inference threads (0: the plugin's default).
  """

  def __init__(self, path: str, threads: int = 0, precision: str = "f32"):
    ov = require("openvino")
    core = ov.Core()
    model = core.read_model(path)
    if not model.has_rt_info([metadata_lib.KEY]):
      raise UserError(f"{path}: no {metadata_lib.KEY} rt_info (not exported by "
                      "deeplab2_kmax.export)")
    self.metadata = metadata_lib.parse(model.get_rt_info([metadata_lib.KEY]).astype(str),
                                       path)
    config = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
      config["INFERENCE_NUM_THREADS"] = threads
    self.compiled = core.compile_model(model, "CPU", config)
    self.request = self.compiled.create_infer_request()
    self.outputs = {}
    for output in self.compiled.outputs:
      names = set(output.get_names()) & set(OUTPUTS.values())
      if len(names) != 1:
        raise ValueError(f"{path}: cannot name output {output.get_names()}")
      self.outputs[names.pop()] = output
    self.device = f"OpenVINO CPU plugin ({precision})"

  def __call__(self, images: np.ndarray, image_size: np.ndarray) -> Dict[str, np.ndarray]:
    feed = dict(zip(INPUT_NAMES, (np.asarray(images, np.uint8),
                                  np.asarray(image_size, np.int32))))
    result = self.request.infer(feed)
    return {name: np.array(result[output]) for name, output in self.outputs.items()}
