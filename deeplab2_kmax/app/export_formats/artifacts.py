"""Writing and loading the non-SavedModel artifacts.

Layout: `output_dir/<format>/<version>/` (version: the next free number, as the
SavedModel's `output_dir/<version>/`, and the model-repository layout of OpenVINO
Model Server and Triton) holding the model file (`model.onnx`, `model.tflite`, or
`model.xml` + `model.bin`) and `dataset_info.json`. Written to a staging folder and
renamed, so a reader never sees a half-written version. Loading and running imports
only the format's runtime (no TensorFlow).
"""

import os
from typing import Optional, Sequence

from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core.versions import new_version, numbered
from deeplab2_kmax.app.export_formats import litert_format, metadata as metadata_lib
from deeplab2_kmax.app.export_formats import onnx_format, openvino_format

SAVED_MODEL = "saved_model"
MODULES = {m.NAME: m for m in (onnx_format, litert_format, openvino_format)}
FORMATS = (SAVED_MODEL,) + tuple(MODULES)
SUFFIXES = {os.path.splitext(m.FILE_NAME)[1]: m for m in MODULES.values()}


def parse_formats(text: str) -> list:
  """'saved_model,onnx' -> ['saved_model', 'onnx'] (validated, duplicates dropped)."""
  names = [t.strip().lower() for t in (text or SAVED_MODEL).split(",") if t.strip()]
  unknown = [n for n in names if n not in FORMATS]
  if unknown or not names:
    raise UserError(f"--format={text}: unknown format(s) {unknown}; pick from "
                    f"{','.join(FORMATS)} (comma-separated)")
  return list(dict.fromkeys(names))


def export_artifact(fmt: str, predictor, info, output_dir: str, input_size: Sequence[int],
                    version: Optional[int] = None, serving=None, **options) -> str:
  """Converts `predictor` (a PanopticPredictor: model + merger settings) to `fmt` at
  `input_size`; returns the model file's path. `serving`: a PortableServing of them to
  reuse (its graph is traced once for several formats); options go to the format's
  convert."""
  from deeplab2_kmax.app.export_formats.serving_graph import PortableServing  # lazy: no TF in runtimes
  module = MODULES[fmt]
  base = os.path.join(output_dir, fmt)
  with new_version(base, version, f"--output_dir={output_dir}") as (staging, final):
    if serving is None or tuple(serving.input_size) != tuple(input_size):
      serving = PortableServing(predictor, input_size)
    num_masks = serving.function.get_concrete_function().structured_outputs[
        "segment_ids"].shape[-1]
    text = metadata_lib.make(info, serving.input_size, num_masks)
    module.convert(serving, os.path.join(staging, module.FILE_NAME), text, **options)
    info.save(staging)
    os.rename(staging, final)
  return os.path.join(final, module.FILE_NAME)


def artifact_bytes(path: str) -> int:
  """Bytes of an artifact: a folder's files (SavedModel), a model file (+ OpenVINO's
  weights file)."""
  if os.path.isdir(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)
  total = os.path.getsize(path)
  if path.endswith(".xml") and os.path.exists(path[:-4] + ".bin"):
    total += os.path.getsize(path[:-4] + ".bin")
  return total


def resolve_model_file(path: str) -> str:
  """A model file (.onnx / .tflite / .xml), a version folder holding one, or a format
  folder of numbered versions (the highest)."""
  if os.path.isfile(path):
    if os.path.splitext(path)[1] not in SUFFIXES:
      raise UserError(f"--model={path}: not an exported artifact (expected "
                      f"{', '.join(sorted(SUFFIXES))}); SavedModels: --saved_model")
    return path
  if os.path.isdir(path):
    for module in MODULES.values():
      if os.path.isfile(os.path.join(path, module.FILE_NAME)):
        return os.path.join(path, module.FILE_NAME)
    for version in reversed(numbered(path)):
      try:
        return resolve_model_file(os.path.join(path, str(version)))
      except ValueError:
        continue
  raise UserError(f"--model={path}: no model.onnx / model.tflite / model.xml there")


def load_runner(path: str, **options):
  """The format's Runner on the artifact at `path` (see resolve_model_file)."""
  path = resolve_model_file(path)
  return SUFFIXES[os.path.splitext(path)[1]].Runner(path, **options)
