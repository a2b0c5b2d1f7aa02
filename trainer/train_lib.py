"""The distributed training loop: forward, losses, gradients, AdamW, checkpoints, logs.

One tf.function call runs up to `steps_per_loop` steps (`strategy.run` per step, the
global batch split over the replicas by `experimental_distribute_dataset`). The part of
a step that does the arithmetic (forward, losses, gradients) is a separate tf.function
compiled with XLA when `jit_compile`; the gradient all-reduce and the optimizer update
stay outside XLA so that every strategy can run them.

Loss scaling: each replica's loss is its batch mean divided by the number of replicas,
so the SUM all-reduce of gradients gives the gradient of the global-batch mean, and the
summed per-replica losses are the global means that get logged.
"""

import inspect
import json
import math
import os
import re
import time
from typing import Callable, Dict, Optional

from absl import logging
import gin
import keras
import tensorflow as tf
import tqdm

from deeplab2_kmax.conversion import label_space
from deeplab2_kmax.conversion import warm_start
from trainer import checkpointing
from trainer import distribution
from trainer import optimizer as optimizer_lib
from trainer import summaries

LossFn = Callable[[Dict[str, tf.Tensor], Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]


def backbone_pattern_for(model) -> Optional[str]:
  """A `variable.path` regex selecting the model's backbone (its `backbone` attribute)."""
  backbone = getattr(model, "backbone", None)
  if backbone is None:
    return None
  return rf"(^|/){re.escape(backbone.name)}/"


def build_model_variables(model, image_shape, strategy) -> None:
  """Creates all the model's variables, the training-only branch included, with a
  symbolic training-mode call (nothing runs, so batch-norm statistics stay untouched)."""
  height, width = image_shape[1] or 65, image_shape[2] or 65
  with strategy.scope():
    model(keras.Input(shape=(height, width, 3), batch_size=1), training=True)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@gin.configurable(denylist=["model", "loss_fn", "optimizer", "strategy", "model_dir",
                            "dataset_info"])
class Trainer:
  """Trains `model` on a dataset of global batches `(features, labels)`.

  Args:
    model, loss_fn, optimizer: created under `strategy.scope()`; `loss_fn(outputs,
      labels[, seed])` returns a dict of scalar losses with a `total` entry (KMaXLoss;
      a `seed` argument gets [step, replica id] for deterministic pixel sampling).
    strategy: the tf.distribute strategy.
    model_dir: checkpoints go here, summaries to `model_dir/train`.
    steps_per_loop: training steps per tf.function call (also the logging period).
    checkpoint_every: steps between checkpoints (one is always written at the end).
    max_to_keep: checkpoints kept.
    jit_compile: XLA-compile forward + losses + gradients (None: on GPU/TPU only).
    clip_gradient_norm: > 0 clips each replica's gradients to this global norm
      (before the all-reduce, as deeplab2 does).
    checkpoint_input_pipeline: also checkpoint the input iterator (exact resume).
    is_chief: writes summaries; other workers only take part in the collectives.
    progress: show a tqdm progress bar.
    init_checkpoint: where a run that starts from scratch takes its initial weights: a
      deeplab2 checkpoint (full model or ImageNet backbone) or one of ours; what fits
      is restored, class heads of another class count are re-initialized, and a table
      of restored / new / skipped variables is logged (conversion.warm_start). Ignored
      when model_dir already holds a checkpoint (the run resumes).
    dataset_info: the training data's DatasetInfo (its classes, for init_checkpoint).
    overwrite: train from scratch even when none of model_dir's checkpoints can be
      restored (they are kept, renamed *.unreadable); without it that is refused.
  """

  def __init__(self, model, loss_fn: LossFn, optimizer, strategy, model_dir: str,
               steps_per_loop: int = 10, checkpoint_every: int = 1000,
               max_to_keep: int = 3, jit_compile: Optional[bool] = None,
               clip_gradient_norm: float = 0.0, checkpoint_input_pipeline: bool = True,
               is_chief: bool = True, progress: bool = True,
               init_checkpoint: Optional[str] = None, dataset_info=None,
               overwrite: bool = False):
    if steps_per_loop < 1:
      raise ValueError(f"Trainer.steps_per_loop must be >= 1, got {steps_per_loop}")
    self.model = model
    self.loss_fn = loss_fn
    self.optimizer = optimizer
    self.strategy = strategy
    self.model_dir = model_dir
    self.steps_per_loop = int(steps_per_loop)
    self.checkpoint_every = int(checkpoint_every)
    self.max_to_keep = max_to_keep
    if jit_compile is None:
      jit_compile = distribution.default_jit_compile()
    self.jit_compile = bool(jit_compile)
    self.clip_gradient_norm = float(clip_gradient_norm)
    self.checkpoint_input_pipeline = checkpoint_input_pipeline
    self.is_chief = is_chief
    self.progress = progress
    self.init_checkpoint = init_checkpoint
    self.dataset_info = dataset_info
    self.overwrite = overwrite
    with strategy.scope():
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    try:
      self._loss_takes_seed = "seed" in inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
      self._loss_takes_seed = False
    self._compile_functions(self.jit_compile)
    self.checkpoint_state = None
    self._writer = None
    self._loss_keys = None  # names of the step's losses, known after the first call

  def _compile_functions(self, jit_compile: bool, nested: bool = True):
    # The arithmetic (forward, losses, gradients) is its own tf.function, traced once
    # however many steps a loop call unrolls, and XLA-compiled with jit_compile (TPUs
    # compile everything anyway). A nested tf.function must not contain cross-replica
    # sync points (synchronized batch norm under a multi-replica strategy): then it is
    # inlined as plain Python instead (see _run_loop).
    if nested and not isinstance(self.strategy, tf.distribute.TPUStrategy):
      self._grad_fn = tf.function(self._losses_and_gradients, jit_compile=jit_compile)
    else:
      self._grad_fn = self._losses_and_gradients
    self._step_fn = tf.function(self._single_step)
    self._loop_fn = tf.function(self._train_loop)

  def _run_loop(self, iterator, num_steps):
    try:
      return self._call_loop(iterator, num_steps)
    except RuntimeError as e:
      if "merge_call" not in str(e) or self._grad_fn == self._losses_and_gradients:
        raise
      if self.jit_compile:
        logging.warning("XLA is not possible around a cross-replica sync point "
                        "(synchronized batch norm under %s): training without "
                        "jit_compile", type(self.strategy).__name__)
      self.jit_compile = False
      self._compile_functions(False, nested=False)
      return self._call_loop(iterator, num_steps)

  def _call_loop(self, iterator, num_steps):
    # The multi-step loop needs the loss names before it is traced (its loop
    # variables); the single-step function, used for one-step calls and for the very
    # first call, provides them. The loop then continues the first call's sums, so the
    # logged means are the same bits however the steps were split into calls (a resumed
    # run logs what the uninterrupted run logged).
    if num_steps > 1 and self._loss_keys is not None:
      zeros = {k: tf.constant(0.0, tf.float32) for k in self._loss_keys}
      return self._loop_fn(iterator, tf.constant(num_steps, tf.int32), zeros, zeros,
                           tf.constant(0, tf.int32))
    first = self._step_fn(iterator)
    self._loss_keys = tuple(sorted(first[1]))
    if num_steps == 1 or not all(bool(tf.math.is_finite(v)) for v in first[1].values()):
      return first
    return self._loop_fn(iterator, tf.constant(num_steps - 1, tf.int32), first[1],
                         first[1], tf.constant(1, tf.int32))

  # --- one step ---------------------------------------------------------------------
  def _losses_and_gradients(self, features, labels):
    variables = self.model.trainable_variables
    replicas = self.strategy.num_replicas_in_sync
    with tf.GradientTape() as tape:
      outputs = self.model(features["image"], training=True)
      if self._loss_takes_seed:  # deterministic pixel sampling: seed = [step, replica]
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        seed = tf.stack([tf.cast(self.step, tf.int64), tf.cast(replica, tf.int64)])
        raw = self.loss_fn(outputs, labels, seed=seed)
      else:
        raw = self.loss_fn(outputs, labels)
      losses = {k: tf.cast(v, tf.float32) for k, v in raw.items()}
      if "total" not in losses:
        raise KeyError(f"the loss returned {sorted(losses)}; it must have a 'total' entry")
      loss = losses["total"] / replicas
      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
        loss = self.optimizer.scale_loss(loss)
    grads = tape.gradient(loss, variables)
    return grads, {k: v / replicas for k, v in losses.items()}

  def _replica_step(self, features, labels):
    # Strings (image ids, file names) are neither needed by the loss nor XLA-compatible.
    labels = {k: v for k, v in labels.items() if v.dtype != tf.string}
    features = {k: v for k, v in features.items() if v.dtype != tf.string}
    grads, losses = self._grad_fn(features, labels)
    if self.clip_gradient_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, self.clip_gradient_norm)
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    return losses

  def _distributed_step(self, iterator):
    features, labels = next(iterator)
    per_replica = self.strategy.run(self._replica_step, args=(features, labels))
    self.step.assign_add(1)
    return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()}

  def _single_step(self, iterator):
    """One step: (losses, losses, 1), the _train_loop results of a one-step call."""
    last = self._distributed_step(iterator)
    return dict(last), last, tf.constant(1, tf.int32)

  def _train_loop(self, iterator, num_steps, sums, last, done):
    """Runs up to num_steps more steps after `done` steps whose losses add up to
    `sums` (`last`: the latest); stops early after a non-finite loss.

    Returns (mean losses over all the steps, last losses, number of steps). The step
    is traced once, inside the loop only: a copy of it in front of the loop (to give
    the loop variables their structure) made the graph twice as large and cost
    0.7 GiB of peak memory on the R50 COCO step (an extra live copy of state
    between the two copies), so the loop variables start from the values given
    (zeros named after the losses of the first, single-step, call).
    """
    sums, last = dict(sums), dict(last)
    for _ in tf.range(num_steps):
      if not tf.reduce_all([tf.math.is_finite(v) for v in last.values()]):
        break
      last = self._distributed_step(iterator)
      sums = {k: sums[k] + last[k] for k in sums}
      done += 1
    means = {k: v / tf.cast(tf.maximum(done, 1), v.dtype) for k, v in sums.items()}
    return means, last, done

  # --- the run ----------------------------------------------------------------------
  def _setup(self, dataset):
    image_spec = dataset.element_spec[0]["image"]
    build_model_variables(self.model, image_spec.shape, self.strategy)
    with self.strategy.scope():
      self.optimizer.build(self.model.trainable_variables)
    self._global_batch = image_spec.shape[0]
    iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
    # Plain tf.data iterators checkpoint their position; distributed iterators (e.g.
    # MirroredStrategy's) are not trackable, so those are fast-forwarded after restore.
    trackable = isinstance(iterator, tf.__internal__.tracking.Trackable)
    self.checkpoint_state = checkpointing.CheckpointState(
        self.model_dir, self.model, self.optimizer, self.step,
        iterator=iterator if self.checkpoint_input_pipeline and trackable else None,
        max_to_keep=self.max_to_keep, overwrite=self.overwrite)
    if self.checkpoint_state.restore_latest() is None and self.init_checkpoint:
      self._warm_start()
    step = int(self.step.numpy())
    if self.is_chief:  # steps after the checkpoint are trained (and logged) again
      for logs in ("train", "eval"):
        summaries.drop_history_after(
            os.path.join(self.model_dir, logs, "history.jsonl"), step)
    if self.checkpoint_input_pipeline and not trackable and step > 0:
      logging.warning("fast-forwarding the input pipeline by %d batches to resume", step)
      iterator = iter(self.strategy.experimental_distribute_dataset(dataset.skip(step)))
    if self._writer is None:
      self._writer = summaries.Writer(f"{self.model_dir}/train", enabled=self.is_chief)
    return iterator

  def _warm_start(self):
    info = self.dataset_info
    space = None if info is None else label_space.for_dataset(
        info.name, info.num_classes, info.thing_train_ids)
    with self.strategy.scope():
      report = warm_start.initialize(self.model, self.init_checkpoint, space)
    logging.info("%s", report.table())

  def _next_stop(self, step: int, total: int, eval_every: int) -> int:
    stops = [total, step + self.steps_per_loop]
    for every in (self.checkpoint_every, eval_every):
      if every and every > 0:
        stops.append((step // every + 1) * every)
    return min(stops)

  def train(self, dataset: tf.data.Dataset, total_steps: int,
            eval_fn: Optional[Callable[[int], dict]] = None, eval_every: int = 0) -> dict:
    """Trains until `step == total_steps`, resuming from model_dir; returns last losses.

    eval_fn(step) runs every `eval_every` steps and at the end (train_and_eval).
    Raises NonFiniteLossError on NaN/Inf and TrainingInterrupted after SIGTERM/SIGINT.
    """
    iterator = self._setup(dataset)
    state = self.checkpoint_state
    step = int(self.step.numpy())
    if step >= total_steps:
      logging.info("step %d >= train_steps %d: nothing to train", step, total_steps)
      if eval_fn is not None:
        eval_fn(step)
    bar = tqdm.tqdm(total=total_steps, initial=step, desc="train", unit="step",
                    disable=not (self.progress and self.is_chief), dynamic_ncols=True)
    logs = {}
    start_step, start_time = step, time.time()
    with checkpointing.StopSignal() as stop:
      while step < total_steps:
        n = self._next_stop(step, total_steps, eval_every) - step
        t0 = time.time()
        means, last, done = self._run_loop(iterator, n)
        last = {k: float(v) for k, v in last.items()}
        step = int(self.step.numpy())
        checkpointing.check_finite(last, step, state.latest)
        elapsed = time.time() - t0
        logs = {k: float(v) for k, v in means.items()}
        self._log(step, total_steps, logs, int(done), elapsed, start_step, start_time, bar)
        at_end = step >= total_steps
        if at_end or (self.checkpoint_every > 0 and step % self.checkpoint_every == 0):
          state.save()
        if eval_fn is not None and (at_end or (eval_every > 0 and step % eval_every == 0)):
          eval_fn(step)
        if stop.requested is not None:
          path = state.latest if state.saved_at(step) else state.save()
          bar.close()
          raise checkpointing.TrainingInterrupted(stop.requested, path)
    bar.close()
    return logs

  def _log(self, step, total, losses, done, elapsed, start_step, start_time, bar):
    lr = optimizer_lib.current_learning_rate(self.optimizer, step)
    speed = (self._global_batch or 0) * done / max(elapsed, 1e-9)
    rate = (step - start_step) / max(time.time() - start_time, 1e-9)
    eta = _format_eta((total - step) / rate) if rate > 0 else "?"
    values = {f"losses/{k}": v for k, v in losses.items()}
    values.update({"learning_rate": lr, "examples_per_second": speed,
                   "steps_per_second": done / max(elapsed, 1e-9)})
    self._writer.scalars(values, step)
    if self.is_chief:  # a plain-text copy of the curves (the demo prints it)
      os.makedirs(os.path.join(self.model_dir, "train"), exist_ok=True)
      with open(os.path.join(self.model_dir, "train", "history.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, **values}) + "\n")
    bar.update(done)
    bar.set_postfix(loss=f"{losses.get('total', math.nan):.4f}", lr=f"{lr:.2e}")
    terms = " ".join(f"{k}={v:.4f}" for k, v in sorted(losses.items()) if k != "total")
    logging.info("step %d/%d loss %.4f (%s) lr %.3g %.2f ex/s ETA %s", step, total,
                 losses.get("total", math.nan), terms, lr, speed, eta)
