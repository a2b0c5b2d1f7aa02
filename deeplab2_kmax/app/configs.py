"""Reading the gin configs of `configs/`: one way for every tool, test and user.

Importing this module registers every configurable a model config binds (the model and
its backbones, the mask-wise merge, the eval input size); `parse_config` resolves the
configs' `include` lines from the repository root wherever the caller runs, refuses a
missing file or bad binding in one line naming --gin_file / --gin_bindings, and parses.
Training configurables (optimizer, loss, trainer, input pipeline) are registered by the
trainer; tools that do not train pass `skip_unknown=True`.
"""

import os
from typing import Optional, Sequence

from absl import flags
import gin

from deeplab2_kmax.core import cli
from deeplab2_kmax.core import geometry  # noqa: F401  (registers eval_input_size)
from deeplab2_kmax import model  # noqa: F401  (registers build_model, build_backbone)
from deeplab2_kmax import post_processing  # noqa: F401  (registers MaskWiseMerger)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_config(gin_files: Sequence[str], bindings: Sequence[str] = (),
                 skip_unknown: bool = False, clear: bool = False, **kwargs) -> None:
  """Parses `gin_files` then `bindings` (see the module docstring); `clear` first drops
  any earlier configuration (tests and tools that parse several configs)."""
  if REPO_ROOT not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(REPO_ROOT)
  if clear:
    gin.clear_config()
  with gin.unlock_config():
    cli.parse_gin(list(gin_files), list(bindings), skip_unknown=skip_unknown, **kwargs)


def repo_path(path: str) -> str:
  """`path` if it exists, else the same path under the repository root."""
  return path if os.path.exists(path) else os.path.join(REPO_ROOT, path)


def define_model_flags(flag_values=None, dataset_info_help: str = "the converter's "
                       "dataset_info.json", gin_help: str = "gin config(s) the checkpoint "
                       "was trained with", checkpoint_default: Optional[str] = "") -> None:
  """--gin_file, --gin_bindings, --checkpoint and --dataset_info: the model a command runs
  (evaluate, export, predict, visualize_clusters), on `flag_values` (default: absl's global
  FLAGS). `checkpoint_default=None` lets a caller mark --checkpoint as required."""
  on = {"flag_values": flag_values if flag_values is not None else flags.FLAGS}
  flags.DEFINE_multi_string("gin_file", [], gin_help, **on)
  flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings", **on)
  flags.DEFINE_string("checkpoint", checkpoint_default,
                      "checkpoint prefix (model_dir/ckpt-300) or model_dir", **on)
  flags.DEFINE_string("dataset_info", None if checkpoint_default is None else "",
                      dataset_info_help, **on)
