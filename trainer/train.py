r"""Trains and/or evaluates kMaX-DeepLab from gin configs.

  python trainer/train.py --gin_file=CONFIG.gin [--gin_file=...] \
      [--gin_bindings='build_optimizer.base_learning_rate = 1e-4'] \
      --model_dir=DIR --mode=train|eval|train_and_eval|continuous_eval \
      --train_tfrecord='OUT/train-*.tfrecord' --eval_tfrecord='OUT/val-*.tfrecord' \
      --dataset_info=OUT/dataset_info.json --train_steps=N

* The data flags override the config (`data_files.*`), `--train_steps` overrides
  `build_optimizer.total_steps`; the number of classes / thing classes / label constants
  come from dataset_info.json (written by the converters).
* Strategy: default (one device), MirroredStrategy over all local GPUs (or
  --num_gpus), MultiWorkerMirroredStrategy when TF_CONFIG names several workers,
  TPUStrategy with --tpu. The gin-bound batch size is the global batch.
* --init_checkpoint starts a new run from a deeplab2 checkpoint (full model or ImageNet
  backbone) or one of ours; class heads of another class count are re-initialized and
  a table of restored / new / skipped variables is printed.
* Restarting with the same --model_dir resumes exactly from its newest readable
  checkpoint (model, optimizer, step, input position, random generators, seed); a model_dir
  whose checkpoints all fail to read is not trained from scratch unless --overwrite.
  SIGTERM/SIGINT save a checkpoint and exit with 128 + the signal number; a NaN/Inf loss
  stops with exit status 3; refused input prints one line `error: <file/flag>: ...` and
  exits with status 2 (--verbose: with the traceback).
* TensorBoard: `tensorboard --logdir DIR` (train/ and eval/); eval metrics also in
  DIR/eval/metrics.json.
"""

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import gin
import tensorflow as tf

from deeplab2_kmax.core import cli
from trainer import checkpointing
from trainer import distribution
from trainer import experiment

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_multi_string("gin_file", [], "Gin config file(s), applied in order.")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings, applied last.")
  flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and eval metrics go here.")
  flags.DEFINE_enum("mode", "train", ["train", "eval", "train_and_eval", "continuous_eval"],
                    "What to run.")
  flags.DEFINE_string("train_tfrecord", None, "Glob of the training TFRecord shards.")
  flags.DEFINE_string("eval_tfrecord", None, "Glob of the evaluation TFRecord shards.")
  flags.DEFINE_string("dataset_info", None, "The converter's dataset_info.json.")
  flags.DEFINE_integer("train_steps", None, "Training steps (overrides the config).")
  flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multi_worker",
                                         "tpu"], "tf.distribute strategy.")
  flags.DEFINE_integer("num_gpus", None, "GPUs for MirroredStrategy (default: all).")
  flags.DEFINE_string("tpu", None, "TPU address (or 'local') for TPUStrategy.")
  flags.DEFINE_bool("jit_compile", None,
                    "XLA-compile the train step (default: on GPU/TPU, off on CPU).")
  flags.DEFINE_bool("mixed_precision", False,
                    "mixed_float16 on GPU; mixed_bfloat16 on TPU and on CPUs with native "
                    "bf16 (AVX512-BF16/AMX) when not --jit_compile; else float32.")
  flags.DEFINE_integer("seed", None, "Seed of model init and data order/augmentation.")
  flags.DEFINE_bool("deterministic", False, "Enable TF op determinism (slower).")
  flags.DEFINE_string("init_checkpoint", None,
                      "Initial weights of a run starting from scratch: a deeplab2 "
                      "checkpoint (full model or ImageNet backbone; prefix, folder or "
                      ".tar.gz) or one of ours (overrides Trainer.init_checkpoint).")
  flags.DEFINE_bool("overwrite", False, "Train from scratch even when none of the "
                    "checkpoints in --model_dir can be restored (they are kept, renamed "
                    "*.unreadable); without it such a model_dir is refused.")
  flags.mark_flag_as_required("model_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"{argv[1]}: unexpected argument")
  if os.path.exists(FLAGS.model_dir) and not os.path.isdir(FLAGS.model_dir):
    raise app.UsageError(f"--model_dir={FLAGS.model_dir}: not a directory")
  bindings = list(FLAGS.gin_bindings)
  if FLAGS.init_checkpoint:
    bindings.append(f"Trainer.init_checkpoint = {json.dumps(FLAGS.init_checkpoint)}")
  cli.parse_gin(FLAGS.gin_file, bindings)
  if FLAGS.deterministic:
    tf.config.experimental.enable_op_determinism()
  strategy = distribution.get_strategy(FLAGS.strategy, FLAGS.num_gpus, FLAGS.tpu)
  defaults = experiment.data_files()
  files = experiment.DataFiles(
      train_tfrecord=FLAGS.train_tfrecord or defaults.train_tfrecord,
      eval_tfrecord=FLAGS.eval_tfrecord or defaults.eval_tfrecord,
      dataset_info=FLAGS.dataset_info or defaults.dataset_info)
  os.makedirs(FLAGS.model_dir, exist_ok=True)
  config_path = os.path.join(FLAGS.model_dir, "operative_config.gin")
  if os.path.exists(config_path) and open(config_path).read() != gin.config_str():
    n = 1  # another configuration before: kept, never written over
    while os.path.exists(f"{config_path[:-4]}.{n}.gin"):
      n += 1
    os.rename(config_path, f"{config_path[:-4]}.{n}.gin")
  with open(config_path, "w") as f:
    f.write(gin.config_str())
  try:
    result = experiment.run(FLAGS.mode, FLAGS.model_dir, files, FLAGS.train_steps,
                            strategy=strategy, jit_compile=FLAGS.jit_compile,
                            mixed_precision=FLAGS.mixed_precision, seed=FLAGS.seed,
                            overwrite=FLAGS.overwrite)
  except checkpointing.TrainingInterrupted as e:
    logging.warning("%s", e)
    sys.exit(128 + e.signum)
  except checkpointing.NonFiniteLossError as e:
    logging.error("%s", e)
    sys.exit(3)
  summary = {k: v for k, v in result.items() if k != "per_class"}
  logging.info("done: %s", summary)
  print(f"final: {summary}", flush=True)


def entry():
  """Console script `kmax-train`."""
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
