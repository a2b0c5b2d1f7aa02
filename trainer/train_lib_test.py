"""Trainer loop tests on the stand-in net: learning, NaN guard, exact resume after
SIGTERM, MirroredStrategy == one device."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import checkpointing
from trainer import optimizer as optimizer_lib
from trainer import testing_utils
from trainer import train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trainer(model_dir, steps, **kwargs):
  keras.utils.set_random_seed(1)
  strategy = tf.distribute.get_strategy()
  model = testing_utils.make_model()
  optimizer = optimizer_lib.build_optimizer(total_steps=steps, base_learning_rate=0.1,
                                            warmup_steps=2)
  kwargs.setdefault("steps_per_loop", 4)
  return train_lib.Trainer(model, testing_utils.tiny_loss, optimizer, strategy,
                           str(model_dir), progress=False, **kwargs)


def test_a_few_steps_lower_the_loss(tmp_path):
  trainer = _trainer(tmp_path, 24, checkpoint_every=0)
  dataset = testing_utils.make_dataset()
  first = trainer.train(dataset, 4)["total"]
  last = trainer.train(dataset, 24)["total"]
  assert int(trainer.step.numpy()) == 24
  assert last < 0.7 * first, (first, last)
  # one checkpoint at the end of each train() call, named by step
  assert trainer.checkpoint_state.latest.endswith("ckpt-24")
  assert os.listdir(tmp_path / "train"), "no TensorBoard summaries written"


def test_backbone_group_comes_from_model_attribute(tmp_path):
  trainer = _trainer(tmp_path, 4)
  trainer.train(testing_utils.make_dataset(), 1)
  model = trainer.model
  pattern = train_lib.backbone_pattern_for(model)
  optimizer = optimizer_lib.build_optimizer(4, backbone_pattern=pattern)
  optimizer.build(model.trainable_variables)
  report = {p: (m, d) for p, m, d in
            optimizer_lib.trainable_variables_report(optimizer, model.trainable_variables)}
  assert report == {"tiny/backbone/kernel": (0.1, True), "tiny/backbone/bias": (0.1, False),
                    "tiny/head/kernel": (1.0, True), "tiny/head/bias": (1.0, False)}


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  trainer = _trainer(tmp_path, 20, steps_per_loop=3, checkpoint_every=3)
  dataset = testing_utils.make_dataset(nan_at_batch=7)  # the 8th step sees NaN labels
  with pytest.raises(checkpointing.NonFiniteLossError,
                     match=r"non-finite loss at step 8 .*ckpt-6"):
    trainer.train(dataset, 20)
  # the loop stopped right after the bad step; nothing was saved after step 6
  assert int(trainer.step.numpy()) == 8
  names = sorted(f for f in os.listdir(tmp_path) if f.endswith(".index"))
  assert names == ["ckpt-3.index", "ckpt-6.index"]


def test_step_traced_once_per_function_and_loop_means(tmp_path):
  trainer = _trainer(tmp_path, 10, steps_per_loop=4, checkpoint_every=0)
  traces = []
  step = trainer._distributed_step  # pylint: disable=protected-access
  trainer._distributed_step = lambda it: (traces.append(1), step(it))[1]  # pylint: disable=protected-access
  iterator = trainer._setup(testing_utils.make_dataset())  # pylint: disable=protected-access
  # first call: one step in the single-step function + 3 in the loop, averaged
  means, last, done = trainer._run_loop(iterator, 4)  # pylint: disable=protected-access
  assert int(done) == 4 and int(trainer.step.numpy()) == 4
  assert np.isfinite(float(means["total"])) and set(means) == set(last)
  for n in (4, 1, 3):
    _, _, done = trainer._run_loop(iterator, n)  # pylint: disable=protected-access
    assert int(done) == n
  assert int(trainer.step.numpy()) == 12
  assert len(traces) == 2, "the step must be traced once per tf.function"


def _run_tiny(model_dir, steps, weights_out="", extra=()):
  cmd = [sys.executable, "-m", "trainer.testing_utils", f"--model_dir={model_dir}",
         f"--steps={steps}", f"--weights_out={weights_out}", *extra]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def test_sigterm_saves_and_resume_is_exact(tmp_path):
  steps = 10
  reference = _run_tiny(tmp_path / "a", steps, tmp_path / "a.npz")
  out, _ = reference.communicate(timeout=120)
  assert reference.returncode == 0, out

  # Same run, but slow between loops; SIGTERM once the first checkpoint exists.
  proc = _run_tiny(tmp_path / "b", steps, "", ["--sleep_per_loop=1.5"])
  deadline = time.time() + 90
  while not (tmp_path / "b" / "ckpt-2.index").exists():
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGTERM, out
  stopped = int(out.split("INTERRUPTED step=")[1].split()[0])
  assert 2 <= stopped < steps
  assert (tmp_path / "b" / f"ckpt-{stopped}.index").exists()

  resumed = _run_tiny(tmp_path / "b", steps, tmp_path / "b.npz")
  out, _ = resumed.communicate(timeout=120)
  assert resumed.returncode == 0, out
  a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
  assert len(a.files) == len(b.files) > 0
  for key in a.files:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


_MIRRORED_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from trainer import distribution, optimizer as optimizer_lib, testing_utils, train_lib

    def run(strategy, model_dir, batch_norm):
      keras.utils.set_random_seed(0)
      with strategy.scope():
        model = testing_utils.make_model(batch_norm)
        optimizer = optimizer_lib.build_optimizer(total_steps=6, base_learning_rate=0.01,
                                                  warmup_steps=1)
      trainer = train_lib.Trainer(model, testing_utils.tiny_loss, optimizer, strategy,
                                  model_dir, steps_per_loop=3, progress=False)
      losses = trainer.train(testing_utils.make_dataset(global_batch=4), 6)
      return [v.numpy() for v in model.weights], losses

    for batch_norm in ("none", "sync"):
      one, l1 = run(tf.distribute.get_strategy(), sys.argv[1] + "/one_" + batch_norm,
                    batch_norm)
      two_strategy = distribution.get_strategy(devices=["/cpu:0", "/cpu:1"])
      assert two_strategy.num_replicas_in_sync == 2
      two, l2 = run(two_strategy, sys.argv[1] + "/two_" + batch_norm, batch_norm)
      assert abs(l1["total"] - l2["total"]) < 1e-5, (l1, l2)
      for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
      print("SAME", batch_norm, len(one), max(float(np.abs(a - b).max())
                                               for a, b in zip(one, two)))
""")


def test_mirrored_two_cpus_matches_one_device(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT, str(tmp_path)], cwd=ROOT,
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "SAME none 4" in proc.stdout and "SAME sync 7" in proc.stdout, proc.stdout


def _kmax_batch(crop=33, batch=2, num_classes=5, seed=0):
  """One (features, labels) batch of random rectangles for the real kMaX loss."""
  from data.panoptic_targets import panoptic_targets  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  images, labels = [], []
  for _ in range(batch):
    panoptic = np.full((crop, crop), 4 * 256, np.int32)       # stuff background
    for k in range(1, 5):
      y, x = rng.integers(0, crop - 12, size=2)
      cls = int(rng.integers(3))                               # things 0..2
      panoptic[y:y + 12, x:x + 12] = cls * 256 + k
    labels.append(panoptic_targets(tf.constant(panoptic), num_classes, [0, 1, 2],
                                   256, 255, 8))
    images.append(rng.uniform(0, 255, (crop, crop, 3)).astype(np.float32))
  stacked = {k: tf.stack([l[k] for l in labels]) for k in labels[0]}
  return {"image": tf.constant(np.stack(images))}, stacked


def _train_tiny_kmax(model_dir, policy, steps=8):
  """Losses of the real tiny kMaX model + KMaXLoss trained under `policy`."""
  from deeplab2_kmax.layers.test_utils import TINY_MODEL_KWARGS, TINY_RESNET_KWARGS  # pylint: disable=g-import-not-at-top
  from deeplab2_kmax.losses.kmax_loss import KMaXLoss  # pylint: disable=g-import-not-at-top
  from deeplab2_kmax.model import build_model  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy)   # as experiment.run sets it
  try:
    model = build_model(5, backbone="resnet50", backbone_kwargs=TINY_RESNET_KWARGS,
                        **TINY_MODEL_KWARGS)
    loss = KMaXLoss(instance_discrimination_sample_k=256)
    assert loss._matmul_dtype().name == policy.replace("mixed_", "")  # pylint: disable=protected-access
    optimizer = optimizer_lib.build_optimizer(total_steps=steps,
                                              base_learning_rate=5e-3, warmup_steps=1)
    trainer = train_lib.Trainer(model, loss, optimizer, tf.distribute.get_strategy(),
                                str(model_dir), steps_per_loop=4, checkpoint_every=0,
                                progress=False)
    dataset = tf.data.Dataset.from_tensors(_kmax_batch()).repeat()
    trainer.train(dataset, steps)
  finally:
    keras.config.set_dtype_policy(previous)
  history = (model_dir / "train" / "history.jsonl").read_text().splitlines()
  return model, [json.loads(line)["losses/total"] for line in history]


@pytest.mark.slow  # two tiny kMaX trainings (~85 s on 2 cores)
def test_mixed_bfloat16_kmax_training_tracks_float32(tmp_path):
  """The real tiny kMaX model under the CPU mixed-precision policy learns like float32."""
  model, low = _train_tiny_kmax(tmp_path / "bf16", "mixed_bfloat16")
  assert model.dtype_policy.name == "mixed_bfloat16"
  assert all(v.dtype == "float32" for v in model.weights)   # float32 variables/ckpts
  outputs = model(_kmax_batch(batch=1)[0]["image"], training=False)
  assert outputs["mask_logits"].dtype == "float32"
  _, full = _train_tiny_kmax(tmp_path / "f32", "float32")
  assert low[-1] < 0.96 * low[0] and full[-1] < 0.96 * full[0], (low, full)
  assert low[-1] != full[-1]                                  # bf16 really used
  np.testing.assert_allclose(low, full, rtol=0.01)
