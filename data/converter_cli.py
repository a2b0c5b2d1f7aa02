"""What every converter command shares: the output flags, the fixed-label-set category
check, and the one-line report of a finished conversion."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from absl import flags

from data.panoptic_io import DataValidationError
from deeplab2_kmax.core.dataset_info import DatasetInfo

FLAGS = flags.FLAGS


def define_output_flags(num_shards: int, split_help: str = "train | val.",
                        flag_values: flags.FlagValues = FLAGS) -> None:
  """--split, --output_dir (required), --num_shards, --num_workers, --overwrite. Call from
  the command's flag definitions, then `flags.adopt_module_key_flags(converter_cli)` so
  that --help lists them with the command's own."""
  on = {"flag_values": flag_values}
  flags.DEFINE_string("split", "val", split_help, **on)
  flags.DEFINE_string("output_dir", None, "Where shards and dataset_info.json go.", **on)
  flags.DEFINE_integer("num_shards", num_shards, "Number of shards.", **on)
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Worker processes.", **on)
  flags.DEFINE_bool("overwrite", False, "Replace another conversion of --split found in "
                    "--output_dir (its shards are deleted) instead of refusing.", **on)
  flags.mark_flag_as_required("output_dir", flag_values=flag_values)


def check_json_categories(json_categories: Sequence[dict[str, Any]], json_path: str,
                          info: DatasetInfo, label_set: str, unknown_hint: str,
                          isthing_hint: str = "") -> None:
  """For datasets with a fixed label set (Cityscapes, ADE20K): every category of the JSON
  must be one of `info`'s ids with the same isthing flag (when the JSON gives one)."""
  known = {c.id: c for c in info.categories}
  for cat in json_categories:
    cid = int(cat["id"])
    if cid not in known:
      raise DataValidationError(
          f"{json_path}: category id {cid} ({cat.get('name')}) is not {unknown_hint}")
    if "isthing" in cat and int(cat["isthing"]) != known[cid].isthing:
      raise DataValidationError(
          f"{json_path}: category id {cid} ({cat.get('name')}) has isthing "
          f"{int(cat['isthing'])}, but {label_set} class {cid} is {known[cid].name!r} "
          f"with isthing {known[cid].isthing}{isthing_hint}")


def run_and_report(convert: Callable[[], DatasetInfo], split: str,
                   output_dir: str) -> DatasetInfo:
  """Runs `convert` (a conversion of `split` into `output_dir`) and prints one line: how
  many examples, where, how fast."""
  start = time.time()
  info = convert()
  n = info.num_examples[split]
  seconds = time.time() - start
  print(f"wrote {n} {split} examples to {output_dir} in {seconds:.1f} s "
        f"({n / max(seconds, 1e-9):.1f} examples/s)")
  return info
