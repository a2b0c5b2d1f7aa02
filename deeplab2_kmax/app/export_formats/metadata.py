"""What travels inside every artifact: the dataset's labels and the export size.

Stored as one JSON string under the key `deeplab2_kmax` (ONNX `metadata_props`,
LiteRT flatbuffer `metadata`, OpenVINO `rt_info`) and, beside the model file, as
`dataset_info.json`, so an artifact file copied alone still names its classes.
"""

import json
from typing import Any, Dict, Sequence

from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core.dataset_info import DatasetInfo

KEY = "deeplab2_kmax"
VERSION = 1


def make(info, input_size: Sequence[int], num_masks: int) -> str:
  """-> the JSON string stored in an artifact."""
  return json.dumps({"version": VERSION, "input_size": [int(v) for v in input_size],
                     "num_masks": int(num_masks), "dataset_info": info.to_json()},
                    sort_keys=True)


def parse(text: str, source: str) -> Dict[str, Any]:
  """JSON string -> dict with `input_size` (H, W), `dataset_info` (a DatasetInfo)."""
  try:
    obj = json.loads(text)
    obj["input_size"] = tuple(int(v) for v in obj["input_size"])
    obj["dataset_info"] = DatasetInfo.from_json(obj["dataset_info"], source=source)
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{source}: malformed {KEY} metadata ({e})") from e
  return obj
