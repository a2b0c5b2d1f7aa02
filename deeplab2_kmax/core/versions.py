"""Numbered version folders, the layout TF Serving, OpenVINO Model Server and Triton
read (`base/1/`, `base/2/`, ...): every export writes the next free number."""

import contextlib
import os
import re
import shutil
from typing import Iterator, List, Optional, Tuple

from deeplab2_kmax.core.cli import UserError


def numbered(base: str) -> List[int]:
  """The numeric sub-folder names of `base`, sorted ([] when `base` does not exist)."""
  names = os.listdir(base) if os.path.isdir(base) else []
  return sorted(int(n) for n in names if re.fullmatch(r"\d+", n))


def next_version(base: str) -> int:
  """1 + the largest numeric sub-folder of `base` (1 when there is none)."""
  return max(numbered(base), default=0) + 1


@contextlib.contextmanager
def new_version(base: str, version: Optional[int], flag: str) -> Iterator[Tuple[str, str]]:
  """Yields (staging folder, final `base/<version>` path) for a new version (`version`,
  default the next free number). The caller writes into the staging folder and renames
  what it wrote to the final path, so a reader never sees a half-written version; the
  staging folder is removed afterwards, also when the export fails. `flag` names the
  user's folder in the refusals."""
  version = next_version(base) if version is None else int(version)
  if version < 1:
    raise UserError(f"--version={version}: must be >= 1")
  final = os.path.join(base, str(version))
  if os.path.exists(final):
    raise UserError(f"{flag}: version {version} already exists ({final}); pick another "
                    "--version or leave it unset")
  staging = os.path.join(base, f".staging-{version}-{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  try:
    yield staging, final
  finally:
    shutil.rmtree(staging, ignore_errors=True)
