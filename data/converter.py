"""COCO-panoptic-format dataset -> sharded TFRecords + dataset_info.json.

Shared by `build_coco_tfrecord.py` (COCO, synthetic, any custom COCO-panoptic dataset)
and `build_cityscapes_tfrecord.py`.

* Examples are sorted by annotation file name and cut into `num_shards` contiguous
  shards, so the output bytes depend only on the input.
* Worker processes (`num_workers`) read, validate and encode examples; the main process
  writes them in order (deterministic), with a tqdm bar.
* Each shard is written to `<name>.tmp` and renamed when complete. A crash never leaves
  a truncated shard under the final name; re-running skips the complete shards.
* `<output_dir>/conversion_<split>.json` records what the split's shards hold (source
  JSON's SHA-256, shard and example counts, label constants), written before the first
  shard. A re-run into a folder holding another conversion of the split (other shard
  count, other source JSON, other settings, or shards without a record) is refused
  unless `overwrite`, which deletes that split's shards first: one folder never mixes
  two conversions.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import multiprocessing
import os
from typing import Any, Callable, Iterator, Optional, Sequence

import tensorflow as tf
from tqdm import tqdm

from data import panoptic_io
from data.panoptic_io import DataValidationError, LabelSpec
from data import tfrecord_format
from deeplab2_kmax.core.dataset_info import DatasetInfo
from deeplab2_kmax.core import safe_paths


@dataclasses.dataclass(frozen=True)
class ExampleTask:
  """Where one example's files are, and its JSON segments."""
  image_path: str
  label_path: str
  image_id: Any  # as in the JSON (COCO: int)
  file_name: str
  segments_info: tuple


def encode_task(task: ExampleTask, spec: LabelSpec) -> tuple:
  """Reads + validates + encodes one example (runs in a worker; no TensorFlow)."""
  data, fmt, height, width = panoptic_io.read_image(task.image_path)
  ids = panoptic_io.read_panoptic_png(task.label_path)
  if ids.shape != (height, width):
    raise DataValidationError(
        f"{task.label_path}: PNG size {ids.shape[1]}x{ids.shape[0]} (WxH) != image size "
        f"{width}x{height} of {task.image_path}")
  internal = panoptic_io.coco_to_internal(ids, task.segments_info, spec, task.label_path)
  label_png = panoptic_io.encode_id_png(internal)
  return data, fmt, height, width, task.image_id, task.file_name, label_png


def tasks_from_panoptic_json(
    panoptic_json: str, panoptic_dir: str, image_dir: str,
    image_subpath: Callable[[str], str] = lambda name: name
    ) -> tuple[list[ExampleTask], list[dict[str, Any]]]:
  """Builds the example list from a COCO panoptic JSON.

  An image is `image_dir/image_subpath(file_name)`, a label `panoptic_dir/file_name`;
  both must stay inside their folder (`safe_paths.inside`). Returns (tasks sorted by
  label file name, the JSON's categories).
  """
  obj = panoptic_io.load_panoptic_json(panoptic_json)
  image_names = {str(im["id"]): im["file_name"] for im in obj.get("images", [])}
  tasks = []
  for ann in obj["annotations"]:
    image_id = ann["image_id"]
    label_name = ann.get("file_name")
    if not label_name:
      raise DataValidationError(f"{panoptic_json}: annotation of image {image_id} has no "
                                "file_name")
    if str(image_id) in image_names:
      image_name = image_names[str(image_id)]
    elif image_names:
      raise DataValidationError(f"{panoptic_json}: image id {image_id} of {label_name} is "
                                "missing from 'images'")
    else:
      image_name = os.path.splitext(label_name)[0] + ".jpg"
    if not isinstance(image_name, str):
      raise DataValidationError(f"{panoptic_json}: image {image_id} has file_name "
                                f"{image_name!r}, not a string")
    tasks.append(ExampleTask(
        image_path=safe_paths.inside(image_dir, image_subpath(image_name), panoptic_json,
                                     f"image file_name of image {image_id}"),
        label_path=safe_paths.inside(panoptic_dir, label_name, panoptic_json,
                                     f"panoptic file_name of image {image_id}"),
        image_id=image_id, file_name=image_name,
        segments_info=tuple(ann.get("segments_info", []))))
  tasks.sort(key=lambda t: (os.path.basename(t.label_path), str(t.image_id)))
  return tasks, obj["categories"]


def _shard_bounds(num_examples: int, num_shards: int) -> list[tuple[int, int]]:
  return [(s * num_examples // num_shards, (s + 1) * num_examples // num_shards)
          for s in range(num_shards)]


def _encoded_stream(fn: Callable, tasks: Sequence[ExampleTask],
                    num_workers: int) -> Iterator[tuple]:
  if num_workers <= 1 or len(tasks) <= 1:
    for task in tasks:
      yield fn(task)
    return
  # fork: workers inherit the imported modules; they run numpy/PIL only, no TF ops.
  ctx = multiprocessing.get_context("fork")
  with ctx.Pool(num_workers) as pool:
    yield from pool.imap(fn, tasks, chunksize=max(1, min(16, len(tasks) // (4 * num_workers))))


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def record_path(output_dir: str, split: str) -> str:
  """`conversion_<split>.json`: not matched by the `<split>-*` shard globs."""
  return os.path.join(output_dir, f"conversion_{split}.json")


def _short(value) -> str:
  text = str(value)
  return text[:12] + "..." if len(text) > 15 else text


def claim_output(output_dir: str, split: str, record: dict, overwrite: bool = False):
  """Refuses (or, with `overwrite`, deletes) another conversion of `split` in
  `output_dir`, then writes `record` (see the module docstring)."""
  path = record_path(output_dir, split)
  shards = glob.glob(os.path.join(glob.escape(output_dir), f"{glob.escape(split)}-*-of-*"))
  ours = {os.path.join(output_dir, tfrecord_format.shard_name(split, s, record["num_shards"]))
          for s in range(record["num_shards"])}
  ours |= {p + ".tmp" for p in ours}
  old = None
  if os.path.exists(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError):
      old = {}
  if old is not None:
    changes = [f"{k} {_short(old.get(k))} -> {_short(v)}" for k, v in record.items()
               if k != "source" and old.get(k) != v]
    problem = f"({', '.join(changes)}) ({path})" if changes else None
  elif shards:
    problem = f"(shards such as {os.path.basename(sorted(shards)[0])} without a record {path})"
  else:
    problem = None
  if problem is None and set(shards) - ours:
    problem = f"(other shards: {os.path.basename(sorted(set(shards) - ours)[0])})"
  if problem is not None:
    if not overwrite:
      raise DataValidationError(
          f"--output_dir={output_dir}: holds another conversion of split {split!r} "
          f"{problem}; use another --output_dir or pass --overwrite to replace it")
    for stale in shards:
      os.remove(stale)
  os.makedirs(output_dir, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1)
  os.replace(path + ".tmp", path)


def write_shards(tasks: Sequence[ExampleTask], spec: LabelSpec, output_dir: str, split: str,
                 num_shards: int, num_workers: int = 1) -> list[str]:
  """Writes the shards of one split; returns their paths. Skips complete shards."""
  if num_shards < 1:
    raise DataValidationError(f"--num_shards={num_shards}: must be >= 1")
  os.makedirs(output_dir, exist_ok=True)
  for stale in glob.glob(os.path.join(output_dir, f"{split}-*-of-*.tfrecord.tmp")):
    os.remove(stale)
  paths = [os.path.join(output_dir, tfrecord_format.shard_name(split, s, num_shards))
           for s in range(num_shards)]
  bounds = _shard_bounds(len(tasks), num_shards)
  pending = [s for s in range(num_shards) if not os.path.exists(paths[s])]
  todo = [tasks[i] for s in pending for i in range(*bounds[s])]
  done = len(tasks) - len(todo)
  if done:
    tqdm.write(f"{split}: {num_shards - len(pending)} complete shards found, skipping "
               f"{done} examples")
  fn = functools.partial(encode_task, spec=spec)
  stream = _encoded_stream(fn, todo, num_workers)
  with tqdm(total=len(tasks), initial=done, desc=f"{split} examples", unit="ex") as bar:
    for s in pending:
      tmp = paths[s] + ".tmp"
      try:
        with tf.io.TFRecordWriter(tmp) as writer:
          for _ in range(*bounds[s]):
            data, fmt, height, width, image_id, file_name, label_png = next(stream)
            example = tfrecord_format.make_example(data, fmt, height, width, image_id,
                                                   file_name, label_png)
            writer.write(example.SerializeToString(deterministic=True))
            bar.update(1)
      except BaseException:
        if os.path.exists(tmp):
          os.remove(tmp)
        stream.close()
        raise
      os.replace(tmp, paths[s])
  stream.close()
  return paths


def _merged_info(output_dir: str, info: DatasetInfo, split: str,
                 overwrite: bool) -> DatasetInfo:
  """`info` with the other splits' counts of `<output_dir>/dataset_info.json`; refuses
  other categories / label constants (unless only this split is there and `overwrite`)."""
  path = DatasetInfo.resolve_path(os.path.join(output_dir, "dataset_info.json"))
  if not os.path.exists(path):
    return dataclasses.replace(info, num_examples={})
  old = DatasetInfo.load(path)
  others = {k: v for k, v in old.num_examples.items() if k != split}
  if not old.same_categories(info) and (others or not overwrite):
    raise DataValidationError(
        f"{path}: existing dataset info has different categories / label constants"
        + (f" (splits {sorted(others)})" if others else "")
        + "; use a fresh --output_dir" + ("" if others else " or pass --overwrite"))
  return dataclasses.replace(info, num_examples=others)


def label_spec(info: DatasetInfo) -> LabelSpec:
  return LabelSpec(category_to_train_id=info.category_id_to_train_id,
                   thing_train_ids=frozenset(info.thing_train_ids),
                   label_divisor=info.label_divisor, ignore_label=info.ignore_label)


def convert(tasks: Sequence[ExampleTask], info: DatasetInfo, output_dir: str, split: str,
            num_shards: int, num_workers: int = 1, source: Optional[str] = None,
            overwrite: bool = False) -> DatasetInfo:
  """Writes shards + dataset_info.json for one split; returns the updated info.

  `source` is the annotation file the tasks come from (hashed into the record)."""
  if not tasks:
    raise DataValidationError(f"split {split!r}: no examples found")
  if num_shards < 1:
    raise DataValidationError(f"--num_shards={num_shards}: must be >= 1")
  merged = _merged_info(output_dir, info, split, overwrite)
  claim_output(output_dir, split, {
      "split": split, "num_shards": num_shards, "num_examples": len(tasks),
      "source": os.path.abspath(source) if source else None,
      "source_sha256": file_sha256(source) if source else None,
      "dataset_name": info.name, "label_divisor": info.label_divisor,
      "ignore_label": info.ignore_label, "num_classes": info.num_classes},
               overwrite)
  write_shards(tasks, label_spec(info), output_dir, split, num_shards, num_workers)
  merged.num_examples[split] = len(tasks)
  merged.save(os.path.join(output_dir, "dataset_info.json"))
  return merged


def convert_coco_panoptic(image_dir: str, panoptic_json: str, panoptic_dir: str,
                          output_dir: str, split: str, num_shards: int, num_workers: int = 1,
                          label_divisor: int = 256, ignore_label: int = 255,
                          dataset_name: str = "coco_panoptic",
                          overwrite: bool = False) -> DatasetInfo:
  """The whole COCO-panoptic conversion of one split."""
  tasks, categories = tasks_from_panoptic_json(panoptic_json, panoptic_dir, image_dir)
  info = DatasetInfo.from_coco_categories(dataset_name, categories, label_divisor,
                                          ignore_label)
  return convert(tasks, info, output_dir, split, num_shards, num_workers,
                 source=panoptic_json, overwrite=overwrite)
