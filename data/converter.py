"""COCO-panoptic-format dataset -> sharded TFRecords + dataset_info.json.

Shared by `build_coco_tfrecord.py` (COCO, synthetic, any custom COCO-panoptic dataset)
and `build_cityscapes_tfrecord.py`.

* Examples are sorted by annotation file name and cut into `num_shards` contiguous
  shards, so the output bytes depend only on the input.
* Worker processes (`num_workers`) read, validate and encode examples; the main process
  writes them in order (deterministic), with a tqdm bar.
* Each shard is written to `<name>.tmp` and renamed when complete. A crash never leaves
  a truncated shard under the final name; re-running skips the complete shards.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import multiprocessing
import os
from typing import Any, Callable, Iterator, Sequence

import tensorflow as tf
from tqdm import tqdm

from data import panoptic_io
from data import tfrecord_format
from data.dataset_info import DatasetInfo
from data.panoptic_io import DataValidationError, LabelSpec


@dataclasses.dataclass(frozen=True)
class ExampleTask:
  """Where one example's files are, and its JSON segments."""
  image_path: str
  label_path: str
  image_id: str
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
    panoptic_json: str, panoptic_dir: str,
    image_path_fn: Callable[[str], str]) -> tuple[list[ExampleTask], list[dict[str, Any]]]:
  """Builds the example list from a COCO panoptic JSON.

  `image_path_fn(image_file_name)` locates an image. Returns (tasks sorted by label file
  name, the JSON's categories).
  """
  obj = panoptic_io.load_panoptic_json(panoptic_json)
  image_names = {str(im["id"]): im["file_name"] for im in obj.get("images", [])}
  tasks = []
  for ann in obj["annotations"]:
    image_id = str(ann["image_id"])
    label_name = ann.get("file_name")
    if not label_name:
      raise DataValidationError(f"{panoptic_json}: annotation of image {image_id} has no "
                                "file_name")
    if image_id in image_names:
      image_name = image_names[image_id]
    elif image_names:
      raise DataValidationError(f"{panoptic_json}: image id {image_id} of {label_name} is "
                                "missing from 'images'")
    else:
      image_name = os.path.splitext(label_name)[0] + ".jpg"
    tasks.append(ExampleTask(
        image_path=image_path_fn(image_name),
        label_path=os.path.join(panoptic_dir, label_name), image_id=image_id,
        file_name=image_name, segments_info=tuple(ann.get("segments_info", []))))
  tasks.sort(key=lambda t: (os.path.basename(t.label_path), t.image_id))
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


def write_shards(tasks: Sequence[ExampleTask], spec: LabelSpec, output_dir: str, split: str,
                 num_shards: int, num_workers: int = 1) -> list[str]:
  """Writes the shards of one split; returns their paths. Skips complete shards."""
  if num_shards < 1:
    raise ValueError(f"--num_shards must be >= 1, got {num_shards}")
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


def update_dataset_info(output_dir: str, info: DatasetInfo, split: str,
                        num_examples: int) -> DatasetInfo:
  """Merges this split's count into `<output_dir>/dataset_info.json`."""
  path = DatasetInfo.resolve_path(os.path.join(output_dir, "dataset_info.json"))
  if os.path.exists(path):
    old = DatasetInfo.load(path)
    if not old.same_categories(info):
      raise DataValidationError(
          f"{path}: existing dataset info has different categories / label constants; "
          "use a fresh --output_dir")
    info = dataclasses.replace(info, num_examples=dict(old.num_examples))
  info.num_examples[split] = num_examples
  info.save(path)
  return info


def label_spec(info: DatasetInfo) -> LabelSpec:
  return LabelSpec(category_to_train_id=info.category_id_to_train_id,
                   thing_train_ids=frozenset(info.thing_train_ids),
                   label_divisor=info.label_divisor, ignore_label=info.ignore_label)


def convert(tasks: Sequence[ExampleTask], info: DatasetInfo, output_dir: str, split: str,
            num_shards: int, num_workers: int = 1) -> DatasetInfo:
  """Writes shards + dataset_info.json for one split; returns the updated info."""
  if not tasks:
    raise DataValidationError(f"split {split!r}: no examples found")
  write_shards(tasks, label_spec(info), output_dir, split, num_shards, num_workers)
  return update_dataset_info(output_dir, info, split, len(tasks))


def convert_coco_panoptic(image_dir: str, panoptic_json: str, panoptic_dir: str,
                          output_dir: str, split: str, num_shards: int, num_workers: int = 1,
                          label_divisor: int = 256, ignore_label: int = 255,
                          dataset_name: str = "coco_panoptic") -> DatasetInfo:
  """The whole COCO-panoptic conversion of one split."""
  tasks, categories = tasks_from_panoptic_json(
      panoptic_json, panoptic_dir, lambda name: os.path.join(image_dir, name))
  info = DatasetInfo.from_coco_categories(dataset_name, categories, label_divisor,
                                          ignore_label)
  return convert(tasks, info, output_dir, split, num_shards, num_workers)
