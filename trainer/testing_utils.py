"""Stand-ins for the trainer tests: a tiny segmentation-like net, loss and dataset.

Also a small CLI (`python -m trainer.testing_utils --model_dir=... --steps=...`) so the
tests can train in a fresh process (logical devices, signals, determinism need that).
It prints the final weights' checksum and saves them with numpy.
"""

import argparse
import sys

import numpy as np


def make_dataset(global_batch: int = 4, size: int = 17, nan_at_batch: int = -1):
  """Deterministic (features, labels) batches: target = per-pixel f(image)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def example(i):
    seed = tf.stack([tf.cast(i, tf.int32), 7])
    image = tf.random.stateless_uniform([size, size, 3], seed, 0, 255)
    target = tf.reduce_mean(image, axis=-1, keepdims=True) / 255.0
    target = tf.where(target > 0.5, 1.0, 0.0)
    return {"image": image}, {"target": target, "index": tf.cast(i, tf.float32)}

  ds = tf.data.Dataset.range(64).map(example).shuffle(16, seed=3)
  ds = ds.repeat().batch(global_batch, drop_remainder=True)
  if nan_at_batch >= 0:
    def poison(batch_index, batch):
      features, labels = batch
      target = tf.where(tf.equal(batch_index, nan_at_batch),
                        tf.fill(tf.shape(labels["target"]), np.nan), labels["target"])
      labels = dict(labels, target=target)
      return features, labels
    ds = ds.enumerate().map(poison)
  return ds


def make_model(batch_norm: str = "none", dropout: float = 0.0, width: int = 8):
  """conv -> [BN] -> relu -> [dropout] -> conv(1) with a 'backbone' sub-layer;
  batch_norm in none|sync; dropout draws from a keras SeedGenerator."""
  import keras  # pylint: disable=g-import-not-at-top

  class TinyNet(keras.Model):

    def __init__(self):
      super().__init__(name="tiny")
      self.backbone = keras.layers.Conv2D(width, 3, padding="same", name="backbone",
                                          use_bias=batch_norm == "none")
      self.norm = (keras.layers.BatchNormalization(synchronized=True, name="bn")
                   if batch_norm == "sync" else None)
      self.dropout = keras.layers.Dropout(dropout) if dropout else None
      self.head = keras.layers.Conv2D(1, 1, name="head")

    def call(self, images, training=False):
      x = self.backbone(images / 127.5 - 1.0)
      if self.norm is not None:
        x = self.norm(x, training=training)
      x = keras.ops.relu(x)
      if self.dropout is not None:
        x = self.dropout(x, training=training)
      return {"logits": self.head(x)}

  return TinyNet()


def tiny_loss(outputs, labels):
  """Per-example-mean sigmoid cross-entropy plus an L2 term: {'bce', 'l2', 'total'}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  logits = tf.cast(outputs["logits"], tf.float32)
  bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels["target"], logits))
  l2 = 0.01 * tf.reduce_mean(tf.square(logits))
  return {"bce": bce, "l2": l2, "total": bce + l2}


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--steps", type=int, required=True)
  parser.add_argument("--schedule_steps", type=int, default=0)
  parser.add_argument("--steps_per_loop", type=int, default=2)
  parser.add_argument("--checkpoint_every", type=int, default=2)
  parser.add_argument("--sleep_per_loop", type=float, default=0.0)
  parser.add_argument("--weights_out", default="")
  parser.add_argument("--dropout", type=float, default=0.0)
  args = parser.parse_args(argv)

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from trainer import checkpointing  # lazy: TF after argparse
  from trainer import optimizer as optimizer_lib  # lazy: TF after argparse
  from trainer import train_lib  # lazy: TF after argparse
  keras.utils.set_random_seed(0)
  tf.config.experimental.enable_op_determinism()
  strategy = tf.distribute.get_strategy()
  model = make_model(dropout=args.dropout)
  optimizer = optimizer_lib.build_optimizer(
      total_steps=args.schedule_steps or args.steps, base_learning_rate=0.01,
      warmup_steps=2)
  trainer = train_lib.Trainer(model, tiny_loss, optimizer, strategy, args.model_dir,
                              steps_per_loop=args.steps_per_loop,
                              checkpoint_every=args.checkpoint_every, max_to_keep=100,
                              progress=False)
  if args.sleep_per_loop:
    import time  # pylint: disable=g-import-not-at-top
    def slow_eval(step):
      del step
      time.sleep(args.sleep_per_loop)
    eval_fn, eval_every = slow_eval, args.steps_per_loop
  else:
    eval_fn, eval_every = None, 0
  try:
    trainer.train(make_dataset(), args.steps, eval_fn=eval_fn, eval_every=eval_every)
  except checkpointing.TrainingInterrupted as e:
    print(f"INTERRUPTED step={int(trainer.step.numpy())} ckpt={e.checkpoint}", flush=True)
    return 128 + e.signum
  weights = [v.numpy() for v in model.weights]
  if args.weights_out:
    np.savez(args.weights_out, *weights)
  print(f"DONE step={int(trainer.step.numpy())}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
