"""One experiment from gin config + dataset files: train, eval, train_and_eval,
continuous_eval. `trainer/train.py` is the CLI around `run`.

The dataset comes from arguments that override the gin config (the CLI flags
--train_tfrecord / --eval_tfrecord / --dataset_info / --train_steps), so a converted
dataset of one's own trains without code changes: `dataset_info.json` gives the number
of classes, the thing classes and the label constants.

dataset_info, data and checkpoints must agree: the dataset_info given is compared with
the one the shards were converted with, and with `<model_dir>/dataset_info.json` (a copy
written when training starts); labels are checked against it as they are read; a
checkpoint of another class count or config is refused by name. The run's seed (drawn
when --seed is not given) is kept in `<model_dir>/seed.json` so that a resumed run
shuffles and augments as the uninterrupted one.
"""

import dataclasses
import json
import os
import random
from typing import Optional

from absl import logging
import gin
import keras
import tensorflow as tf

from data import input_pipeline
from data.input_pipeline import build_dataset
from deeplab2_kmax.app import checkpoints as checkpoint_files
from deeplab2_kmax import backbones  # pylint: disable=unused-import  (gin configurables)
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core import dataset_info as dataset_info_lib
from deeplab2_kmax.core.dataset_info import DatasetInfo
from deeplab2_kmax.core import geometry
from deeplab2_kmax.losses.kmax_loss import KMaXLoss
from deeplab2_kmax.model import build_model
from trainer import distribution
from trainer import evaluator as evaluator_lib
from trainer import optimizer as optimizer_lib
from trainer import train_lib

MODES = ("train", "eval", "train_and_eval", "continuous_eval")


@dataclasses.dataclass
class DataFiles:
  """Where the data is (flags win over gin)."""
  train_tfrecord: Optional[str] = None
  eval_tfrecord: Optional[str] = None
  dataset_info: Optional[str] = None


@gin.configurable
def data_files(train_tfrecord: Optional[str] = None, eval_tfrecord: Optional[str] = None,
               dataset_info: Optional[str] = None) -> DataFiles:
  """gin defaults for the data files (e.g. `data_files.dataset_info = '...json'`)."""
  return DataFiles(train_tfrecord, eval_tfrecord, dataset_info)


@gin.configurable
def experiment_options(eval_every: int = 0, eval_batch_size: int = 1,
                       continuous_eval_timeout: int = 3600) -> dict:
  """eval_every: steps between evals in train_and_eval (0: only at the end). The eval
  input size is `eval_input_size.size` (core.geometry), shared with evaluate.py, export
  and predict (unbound: build_dataset's crop_size)."""
  return dict(eval_every=eval_every, eval_batch_size=eval_batch_size,
              continuous_eval_timeout=continuous_eval_timeout)


def use_synchronized_batch_norm(model) -> int:
  """Turns every BatchNormalization of `model` into synchronized BN (before its first
  call); returns how many. Needed when a strategy splits the batch over replicas."""
  count = 0
  for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.synchronized = True
      count += 1
  return count


def _need(value, flag: str, what: str) -> str:
  if not value:
    raise UserError(f"--{flag}: {what} is not set (pass --{flag} or bind "
                    f"data_files.{flag})")
  return value


def run_seed(model_dir: str, seed: Optional[int], write: bool) -> int:
  """--seed, else the one in `<model_dir>/seed.json`, else a new one (kept there when
  `write`): data order, augmentation and init of a resumed run match the first run."""
  path = os.path.join(model_dir, "seed.json")
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      stored = int(json.load(f)["seed"])
    if seed is not None and seed != stored:
      logging.warning("--seed=%d differs from the seed %d this model_dir started with "
                      "(%s): a resumed run will not repeat the first run", seed, stored,
                      path)
    seed = stored if seed is None else seed
  elif write:
    seed = random.SystemRandom().randrange(2 ** 31) if seed is None else seed
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(path, "w") as f:
      json.dump({"seed": seed}, f)
  return seed


def _check_agreement(info, info_path: str, files: DataFiles, mode: str,
                     model_dir: str, chief: bool) -> None:
  """dataset_info vs the shards and the model_dir's checkpoints (see the docstring)."""
  kinds = {"train": ("train",), "train_and_eval": ("train", "eval")}.get(mode, ("eval",))
  for kind in kinds:
    pattern = getattr(files, f"{kind}_tfrecord")
    if pattern:
      input_pipeline.check_dataset_info(info, info_path, pattern, f"--{kind}_tfrecord")
  copy = os.path.join(model_dir, "dataset_info.json")
  if checkpoint_files.numbered(model_dir):  # else the copy describes no checkpoint yet
    dataset_info_lib.check_agrees(
        info, info_path, copy, f"the checkpoints in --model_dir={model_dir} were made with")
  if chief and mode in ("train", "train_and_eval") and not (
      tf.io.gfile.exists(copy) and checkpoint_files.numbered(model_dir)):
    info.save(copy)


def _data_errors_named(fn, files: DataFiles, info_path: str):
  """Runs fn(); a data error of the input pipelines becomes one UserError line."""
  try:
    return fn()
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    patterns = {f"--{k}": v for k, v in (("train_tfrecord", files.train_tfrecord),
                                         ("eval_tfrecord", files.eval_tfrecord)) if v}
    error = input_pipeline.data_error(e, patterns, info_path)
    if error is None:
      raise
  raise error


def run(mode: str, model_dir: str, files: DataFiles, train_steps: Optional[int] = None,
        strategy: Optional[tf.distribute.Strategy] = None,
        jit_compile: Optional[bool] = None, mixed_precision: bool = False,
        seed: Optional[int] = None, overwrite: bool = False) -> dict:
  """Runs one mode; returns the last eval metrics (or the last train losses).
  `overwrite`: see train_lib.Trainer."""
  if mode not in MODES:
    raise UserError(f"--mode={mode}: must be one of {MODES}")
  info_path = _need(files.dataset_info, "dataset_info", "the dataset_info.json path")
  if not tf.io.gfile.exists(info_path):
    raise UserError(f"--dataset_info={info_path}: no such file")
  info = DatasetInfo.load(info_path)
  strategy = strategy or distribution.get_strategy()
  if jit_compile is None:
    jit_compile = distribution.default_jit_compile()
  policy = distribution.resolve_precision(mixed_precision, jit_compile)
  keras.mixed_precision.set_global_policy(policy)
  chief = distribution.is_chief(strategy)
  _check_agreement(info, info_path, files, mode, model_dir, chief)
  if mode in ("train", "train_and_eval"):
    seed = run_seed(model_dir, seed, write=chief)
  if seed is not None:
    keras.utils.set_random_seed(seed)
  own_dir = distribution.worker_model_dir(model_dir, strategy)
  options = experiment_options()

  with strategy.scope():
    model = build_model(num_classes=info.num_classes)
    if strategy.num_replicas_in_sync > 1:
      logging.info("synchronized batch norm in %d layers", use_synchronized_batch_norm(model))
  logging.info("model for %d classes (%s), policy %s", info.num_classes, info.name, policy)

  evaluator, eval_dataset = None, None
  if mode != "train" and chief:
    eval_files = _need(files.eval_tfrecord, "eval_tfrecord", "the eval TFRecord glob")
    size = geometry.eval_input_size()
    kwargs = {"crop_size": size} if size else {}
    eval_dataset = build_dataset(eval_files, info, is_training=False,
                                 batch_size=options["eval_batch_size"], **kwargs)
    evaluator = evaluator_lib.Evaluator(model, info, model_dir, write_files=chief)

  if mode in ("eval", "continuous_eval"):
    return _data_errors_named(lambda: _evaluate_checkpoints(
        mode, model, model_dir, evaluator, eval_dataset, train_steps,
        options["continuous_eval_timeout"]), files, info_path)

  train_files = _need(files.train_tfrecord, "train_tfrecord", "the train TFRecord glob")
  train_dataset = build_dataset(train_files, info, is_training=True, seed=seed)
  with strategy.scope():
    kwargs = {"total_steps": train_steps} if train_steps else {}
    try:
      optimizer = optimizer_lib.build_optimizer(
          backbone_pattern=train_lib.backbone_pattern_for(model),
          mixed_precision=policy == "mixed_float16", **kwargs)
    except TypeError as e:
      if "total_steps" not in str(e):
        raise
      raise UserError("--train_steps: the number of training steps is not set (pass "
                      "--train_steps or bind build_optimizer.total_steps)") from e
    loss = KMaXLoss()
  total_steps = optimizer_lib.schedule_of(optimizer).total_steps
  trainer = train_lib.Trainer(model, loss, optimizer, strategy, own_dir,
                              jit_compile=jit_compile, is_chief=chief, dataset_info=info,
                              overwrite=overwrite)
  last_metrics = {}

  def eval_fn(step):
    nonlocal last_metrics
    if evaluator is not None:
      last_metrics = evaluator.evaluate(eval_dataset, step)

  losses = _data_errors_named(lambda: trainer.train(
      train_dataset, total_steps, eval_fn=eval_fn if mode == "train_and_eval" else None,
      eval_every=options["eval_every"]), files, info_path)
  return last_metrics or losses


def _evaluate_checkpoints(mode, model, model_dir, evaluator, dataset, train_steps,
                          timeout) -> dict:
  """eval: the latest checkpoint once; continuous_eval: each new one until the last."""
  if evaluator is None:
    return {}
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  checkpoint = tf.train.Checkpoint(model=model, step=step)
  if mode == "eval":
    path = checkpoint_files.newest_readable(model_dir)
    if path is None:
      raise UserError(f"--model_dir={model_dir}: has no checkpoint to evaluate")
    paths = [path]
  else:
    paths = tf.train.checkpoints_iterator(model_dir, timeout=timeout)
  metrics = {}
  for path in paths:
    train_lib.build_model_variables(model, dataset.element_spec[0]["image"].shape,
                                    tf.distribute.get_strategy())
    checkpoint_files.restore(checkpoint, path, partial=True)
    logging.info("evaluating %s (step %d)", path, int(step.numpy()))
    metrics = evaluator.evaluate(dataset, int(step.numpy()))
    if mode == "continuous_eval" and train_steps and int(step.numpy()) >= train_steps:
      break
  return metrics
