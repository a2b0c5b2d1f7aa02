"""Optional converters and runtimes: import them, or say in one line what to install.

They are the `[export]` extra of pyproject.toml (`pip install 'deeplab2-kmax[export]'`)
and pinned in requirements.txt (CI runs every format).
"""

import importlib

from deeplab2_kmax.core.cli import UserError

# module -> (pip requirement, what needs it)
PACKAGES = {
    "tf2onnx": ("tf2onnx", "--format=onnx (the converter)"),
    "onnx": ("onnx", "--format=onnx"),
    "onnxruntime": ("onnxruntime", "running or verifying an ONNX artifact"),
    "ai_edge_litert": ("ai-edge-litert", "running or verifying a LiteRT artifact"),
    "openvino": ("openvino", "--format=openvino and running an OpenVINO artifact"),
}


class MissingRuntime(UserError):
  """A converter or runtime is not installed; the message is one line saying what to
  install (a CLI prints it as its `error:` line, exit status 2)."""


def require(module: str):
  """Imports `module` (a key of PACKAGES) or raises MissingRuntime."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    pip_name, purpose = PACKAGES[module]
    raise MissingRuntime(
        f"{purpose} needs the Python package {pip_name}: pip install {pip_name} "
        f"(or pip install 'deeplab2-kmax[export]'); import {module} failed: {e}") from e


def available(module: str) -> bool:
  try:
    require(module)
  except MissingRuntime:
    return False
  return True
