"""The `--format` part of `python -m deeplab2_kmax.export`: for each requested
non-SavedModel format, convert, verify in its own runtime, print one JSON line.

  {"format": "onnx", "path": ".../onnx/1/model.onnx", "bytes": 1269691,
   "verified_images": 50, "min_agreement": 1.0, "mean_agreement": 1.0,
   "identical_images": 50, "input_size": [129, 129]}

The export size is `--input_size`, else the config's eval input size
(`eval_input_size.size`).
"""

import json
from typing import Dict, List, Optional, Sequence, Tuple

from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.app.export_formats import artifacts, runtimes
from deeplab2_kmax.app.export_formats.artifact_predictor import ArtifactPredictor
from deeplab2_kmax.app.export_formats.serving_graph import PortableServing
from deeplab2_kmax.app.export_formats.verify import verify_artifact


def record(fmt: str, path: str, verified: Optional[Dict] = None, **extra) -> Dict:
  """The JSON line of one artifact (`verified`: verify's result, or None)."""
  line = {"format": fmt, "path": path, "bytes": artifacts.artifact_bytes(path),
          "verified_images": verified["images"] if verified else 0}
  if verified:
    line.update({k: verified[k] for k in ("min_agreement", "mean_agreement",
                                          "identical_images") if k in verified})
  line.update(extra)
  return line


def export_size(input_size: Optional[Sequence[int]]) -> Tuple[int, int]:
  size = input_size
  if not size:
    raise UserError("--format=onnx/litert/openvino export at a fixed size: pass "
                    "--input_size=H,W (the config binds no eval_input_size.size)")
  return predictor_lib.check_input_size(size)


def export_formats(formats: Sequence[str], predictor, info, output_dir: str,
                   input_size: Optional[Sequence[int]] = None, version: Optional[int] = None,
                   verify_tfrecord: str = "", verify_max_examples: int = 0,
                   print_fn=print) -> List[Dict]:
  """Exports, verifies (with verify_tfrecord) and prints each format; returns the
  JSON records. Raises MissingRuntime (one line) before converting anything when a
  needed package is missing."""
  needs = {"onnx": ["tf2onnx", "onnx"] + (["onnxruntime"] if verify_tfrecord else []),
           "litert": ["ai_edge_litert"] if verify_tfrecord else [],
           "openvino": ["openvino"]}
  for fmt in formats:
    for module in needs[fmt]:
      runtimes.require(module)
  size = export_size(input_size)
  python_path = predictor
  if predictor.input_size != size:  # same model and merger, at the export size
    python_path = predictor_lib.PanopticPredictor(predictor.model, predictor.merger,
                                              predictor.label_divisor,
                                              predictor.ignore_label, input_size=size)
  serving = PortableServing(predictor, size)  # traced once for every format
  records = []
  for fmt in formats:
    path = artifacts.export_artifact(fmt, predictor, info, output_dir, size, version,
                                     serving=serving)
    verified = None
    if verify_tfrecord:
      artifact = ArtifactPredictor(artifacts.load_runner(path))
      verified = verify_artifact(artifact, python_path, verify_tfrecord,
                                 verify_max_examples, desc=f"verify {fmt}")
    records.append(record(fmt, path, verified, input_size=list(size)))
    print_fn(json.dumps(records[-1]))
  return records
