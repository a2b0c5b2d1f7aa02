"""Numbered version folders, the layout TF Serving, OpenVINO Model Server and Triton
read (`base/1/`, `base/2/`, ...): every export writes the next free number."""

import os
import re
from typing import List


def numbered(base: str) -> List[int]:
  """The numeric sub-folder names of `base`, sorted ([] when `base` does not exist)."""
  names = os.listdir(base) if os.path.isdir(base) else []
  return sorted(int(n) for n in names if re.fullmatch(r"\d+", n))


def next_version(base: str) -> int:
  """1 + the largest numeric sub-folder of `base` (1 when there is none)."""
  return max(numbered(base), default=0) + 1
