"""tf.data input pipeline: TFRecord shards -> batched (features, labels), see DESIGN.md.

    ds = build_dataset("out/train-*.tfrecord", "out/dataset_info.json", is_training=True,
                       batch_size=16, crop_size=(641, 641), min_scale=0.5, max_scale=2.0)

* `batch_size` is the GLOBAL batch size; with an `input_context` (from
  `strategy.distribute_datasets_from_function`) each pipeline batches
  `input_context.get_per_replica_batch_size(batch_size)` and reads its share of the files
  (or of the records, when there are fewer files than pipelines).
* Training: shuffle, repeat, random scale / crop / flip (`data/preprocessing.py`).
  Eval: one pass in file order, pad (shrink only if larger) to `crop_size` (the eval
  size), `original_size` kept.
* Targets: `data/panoptic_targets.py`. The strided targets (`masks`, `semantic_strided`,
  `ignore_strided`, `pixel_weights`) are `[::label_stride, ::label_stride]` of the crop,
  so `label_stride` must equal the model's `output_stride` (the stride of its
  `mask_logits`): 4 by default, 2 for the Cityscapes configs (stride-2 pixel decoder
  stage); the trainer passes `label_stride=model.output_stride`. Crops are 4k+1, so the
  stride-2 grid point i sits on pixel 2i and every stride-4 point on a stride-2 point:
  the semantic loss (whose logits stay at stride 4) takes its targets as
  `semantic_strided[:, ::2, ::2]` (`KMaXLoss`, exact; no separate stride-4 keys).
* Reproducibility: `seed` fixes file order, shuffling and augmentation; `deterministic`
  sets `tf.data.Options.deterministic` (element order under parallelism).
* Agreement with dataset_info: every label's train ids must be < num_classes (or the
  ignore label), else the pipeline stops with a message naming the image
  (`LABEL_MISMATCH`); `check_dataset_info` compares dataset_info with what the shards
  were converted with, `data_error` turns the pipeline's data errors into one line.
"""
from __future__ import annotations

import json
import os
import random
from typing import Optional, Sequence, Union

import gin
import tensorflow as tf

from data.panoptic_targets import panoptic_targets
from data import preprocessing
from data import tfrecord_format
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core import dataset_info as dataset_info_lib
from deeplab2_kmax.core.dataset_info import DatasetInfo, as_dataset_info

LABEL_MISMATCH = "does not match dataset_info"


def _check_size(crop_size: Sequence[int]) -> tuple[int, int]:
  crop_size = tuple(int(s) for s in crop_size)
  if len(crop_size) != 2 or any(s < 5 or (s - 1) % 4 for s in crop_size):
    raise ValueError(f"crop_size must be two sizes of the form 4k+1 (e.g. 641), got "
                     f"{crop_size}")
  return crop_size


def _list_files(file_pattern: Union[str, Sequence[str]]) -> list[str]:
  patterns = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else file_pattern
  files = sorted({f for p in patterns for f in tf.io.gfile.glob(os.fspath(p))})
  if not files:
    raise UserError(f"{file_pattern}: no TFRecord files match")
  return files


def check_dataset_info(info: DatasetInfo, info_path: str, file_pattern, flag: str) -> None:
  """Refuses (UserError) a dataset_info other than the one the shards matching
  `file_pattern` were converted with: the dataset_info.json beside them, and the class
  count / label constants of their conversion record (`converter.record_path`)."""
  files = tf.io.gfile.glob(file_pattern)
  if not files:
    raise UserError(f"{flag}={file_pattern}: no TFRecord files match")
  for folder in sorted({os.path.dirname(f) for f in files}):
    what = f"the shards of {flag} in {folder} were converted with"
    dataset_info_lib.check_agrees(info, info_path, os.path.join(folder, "dataset_info.json"),
                                  what)
    for name in sorted(tf.io.gfile.listdir(folder)):
      if not (name.startswith("conversion_") and name.endswith(".json")):
        continue
      with tf.io.gfile.GFile(os.path.join(folder, name)) as f:
        record = json.load(f)
      theirs = tuple(record.get(k) for k in ("num_classes", "label_divisor", "ignore_label"))
      if theirs != (info.num_classes, info.label_divisor, info.ignore_label):
        raise UserError(
            f"--dataset_info={info_path}: {dataset_info_lib.describe(info)}, but {what} "
            f"{theirs[0]} classes, label divisor {theirs[1]}, ignore label {theirs[2]} "
            f"({os.path.join(folder, name)})")


def data_error(error: Exception, patterns, info_path: str) -> Optional[UserError]:
  """A one-line UserError for a data error out of a pipeline over `patterns` ({flag:
  glob}): a damaged file (named), a label that does not match dataset_info (the image
  named), a record that does not decode. None for other errors."""
  text = getattr(error, "message", str(error))
  if isinstance(error, tf.errors.DataLossError):
    for flag, pattern in patterns.items():
      located = tfrecord_format.locate_corruption(_list_files(pattern))
      if located:
        return UserError(located)
    return UserError(f"{', '.join(f'{k}={v}' for k, v in patterns.items())}: corrupt "
                     f"TFRecord data ({text.splitlines()[0][:200]})")
  if isinstance(error, tf.errors.InvalidArgumentError) and LABEL_MISMATCH in text:
    detail = text[text.index("image "):].split("]")[0] if "image " in text else text
    return UserError(f"--dataset_info={info_path}: {detail}")
  if isinstance(error, tf.errors.InvalidArgumentError) and "IteratorGetNext" in text:
    return UserError(f"{', '.join(f'{k}={v}' for k, v in patterns.items())}: a record "
                     f"does not parse or decode ({text.splitlines()[0][:200]})")
  return None


def batches_naming_data_errors(dataset, patterns, info_path: str):
  """Iterates `dataset`; a data error becomes `data_error`'s one-line UserError."""
  iterator = iter(dataset)
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      error = data_error(e, patterns, info_path)
      if error is None:
        raise
    else:
      yield batch
      continue
    raise error


def _check_label_stride(label_stride) -> int:
  if isinstance(label_stride, bool) or int(label_stride) != label_stride or \
      int(label_stride) not in (1, 2, 4):
    raise ValueError(f"label_stride must be 1, 2 or 4 (the model's output_stride), got "
                     f"{label_stride!r}")
  return int(label_stride)


def _make_example_fn(info: DatasetInfo, is_training: bool, crop_size, min_scale, max_scale,
                     max_segments, small_instance_area, small_instance_weight,
                     label_stride):
  void = info.ignore_label * info.label_divisor

  def fn(seed, serialized):
    ex = tfrecord_format.parse_example(serialized)
    image, label = ex["image"], ex["panoptic"]
    semantic = label // info.label_divisor
    known = (semantic < info.num_classes) | (semantic == info.ignore_label)
    check = tf.debugging.Assert(tf.reduce_all(known), [tf.strings.format(
        "image {} has train id {} in its label, which " + LABEL_MISMATCH + " ({} classes, "
        "ignore label {})", (ex["image_id"], tf.reduce_max(tf.where(known, -1, semantic)),
                             info.num_classes, info.ignore_label))])
    with tf.control_dependencies([check]):
      label = tf.identity(label)
    original_size = tf.shape(label)[:2]
    if is_training:
      s_scale, s_crop = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
      image, label = preprocessing.random_scale(image, label, min_scale, max_scale, s_scale)
      image, label = preprocessing.random_crop_and_flip(image, label, crop_size, void, s_crop)
    else:
      image, label = preprocessing.resize_to_fit_and_pad(image, label, crop_size, void)
    labels = panoptic_targets(label, info.num_classes, info.thing_train_ids,
                              info.label_divisor, info.ignore_label, max_segments,
                              stride=label_stride, small_instance_area=small_instance_area,
                              small_instance_weight=small_instance_weight)
    labels["panoptic"] = label
    labels["original_size"] = tf.cast(original_size, tf.int32)
    labels["image_id"] = ex["image_id"]
    return {"image": image}, labels

  return fn


@gin.configurable(denylist=["file_pattern", "dataset_info", "is_training", "input_context"])
def build_dataset(file_pattern: Union[str, Sequence[str]],
                  dataset_info: Union[DatasetInfo, str],
                  is_training: bool,
                  batch_size: int,
                  crop_size: Sequence[int] = (641, 641),
                  min_scale: float = 0.5,
                  max_scale: float = 2.0,
                  max_segments: int = 128,
                  small_instance_area: int = 0,
                  small_instance_weight: float = 1.0,
                  label_stride: int = 4,
                  shuffle_buffer_size: int = 256,
                  seed: Optional[int] = None,
                  deterministic: Optional[bool] = None,
                  drop_remainder: Optional[bool] = None,
                  repeat: Optional[bool] = None,
                  cycle_length: int = 4,
                  num_parallel_calls: int = tf.data.AUTOTUNE,
                  prefetch_size: int = tf.data.AUTOTUNE,
                  input_context: Optional[tf.distribute.InputContext] = None
                  ) -> tf.data.Dataset:
  """Returns a dataset of (features, labels) batches; see the module docstring.

  `dataset_info` is a DatasetInfo or the path of dataset_info.json (or its folder).
  `crop_size` is the training crop or the eval size, each 4k+1 (ideally 32k+1).
  `label_stride` (1, 2 or 4; default 4) is the stride of the strided targets and must be
  the model's `output_stride` (2 for the Cityscapes configs):
  `Hs = (H - 1) // label_stride + 1`.
  `drop_remainder` / `repeat` default to True for training, False for eval.
  `deterministic` None keeps tf.data's default (deterministic).
  """
  info = as_dataset_info(dataset_info)
  crop_size = _check_size(crop_size)
  label_stride = _check_label_stride(label_stride)
  if not 0 < min_scale <= max_scale:
    raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
  drop_remainder = is_training if drop_remainder is None else drop_remainder
  repeat = is_training if repeat is None else repeat
  num_pipelines, pipeline_id = 1, 0
  if input_context is not None:
    num_pipelines = input_context.num_input_pipelines
    pipeline_id = input_context.input_pipeline_id
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  base_seed = seed if seed is not None else random.SystemRandom().randrange(2 ** 31)

  files = _list_files(file_pattern)
  ds = tf.data.Dataset.from_tensor_slices(files)
  shard_files = len(files) >= num_pipelines
  if shard_files and num_pipelines > 1:
    ds = ds.shard(num_pipelines, pipeline_id)
  if is_training:
    ds = ds.shuffle(len(files), seed=base_seed, reshuffle_each_iteration=True)
    ds = ds.repeat() if repeat else ds
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                     num_parallel_calls=tf.data.AUTOTUNE if is_training else None,
                     deterministic=deterministic)
  if not shard_files and num_pipelines > 1:
    ds = ds.shard(num_pipelines, pipeline_id)
  if is_training:
    ds = ds.shuffle(shuffle_buffer_size, seed=base_seed + 1)
  elif repeat:
    ds = ds.repeat()
  # Per-element stateless seeds: [base seed, element index * pipelines + pipeline id].
  ds = ds.enumerate().map(
      lambda i, x: (tf.stack([tf.cast(base_seed, tf.int64), i * num_pipelines + pipeline_id]),
                    x))
  example_fn = _make_example_fn(info, is_training, crop_size, min_scale, max_scale,
                                max_segments, small_instance_area, small_instance_weight,
                                label_stride)
  ds = ds.map(example_fn, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  ds = ds.prefetch(prefetch_size)
  options = tf.data.Options()
  if deterministic is not None:
    options.deterministic = deterministic
  return ds.with_options(options)


def dataset_fn_for_strategy(file_pattern, dataset_info, is_training: bool, batch_size: int,
                            **kwargs):
  """A `dataset_fn(input_context)` for `strategy.distribute_datasets_from_function`."""
  def dataset_fn(input_context):
    return build_dataset(file_pattern, dataset_info, is_training, batch_size,
                         input_context=input_context, **kwargs)
  return dataset_fn
