"""Tests of the kMaX AdamW: schedule values, parameter groups by path, exact updates."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import optimizer as opt_lib


def test_schedule_warmup_then_poly():
  schedule = opt_lib.WarmupPolyDecay(1e-3, total_steps=100, warmup_steps=10, power=0.9)
  got = [float(schedule(s)) for s in (0, 5, 9, 10, 55, 100, 150)]
  want = [0.0, 5e-4, 9e-4, 1e-3 * 0.9 ** 0.9, 1e-3 * 0.45 ** 0.9, 0.0, 0.0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)


def test_schedule_rejects_zero_steps():
  with pytest.raises(ValueError, match="train_steps"):
    opt_lib.WarmupPolyDecay(1e-3, total_steps=0)


@pytest.mark.parametrize("path, decayed", [
    ("kmax/backbone/conv1/kernel", True),
    ("kmax/pixel_decoder/stage1/conv/depthwise_kernel", True),
    ("kmax/heads/class/bias", False),
    ("kmax/backbone/conv1_bn/gamma", False),
    ("kmax/backbone/batch_normalization/beta", False),
    ("kmax/decoder/layer_norm/gamma", False),
    ("kmax/decoder/cluster_centers", False),
    ("kmax/decoder/norm_kernel_scale/kernel", False),
])
def test_weight_decay_groups(path, decayed):
  assert opt_lib.uses_weight_decay(path) is decayed


class _TwoPart(keras.Model):
  """backbone (dense with bias) -> head (dense) -> BN; for group tests."""

  def __init__(self):
    super().__init__(name="net")
    self.backbone = keras.layers.Dense(3, name="backbone")
    self.head = keras.layers.Dense(2, name="head")
    self.norm = keras.layers.BatchNormalization(name="head_bn")

  def call(self, x, training=False):
    return self.norm(self.head(self.backbone(x)), training=training)


def _adam_reference(w, g, lr, wd, steps):
  """numpy AdamW (decay first, then Adam with bias correction), constant gradient."""
  m = np.zeros_like(w)
  v = np.zeros_like(w)
  for t in range(1, steps + 1):
    w = w - lr * wd * w
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    alpha = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
    w = w - alpha * m / (np.sqrt(v) + 1e-7)
  return w


def test_groups_and_exact_update():
  model = _TwoPart()
  model(np.zeros((1, 4), np.float32))
  optimizer = opt_lib.KMaXAdamW(0.01, weight_decay_rate=0.1, backbone_multiplier=0.1)
  variables = model.trainable_variables
  optimizer.build(variables)
  groups = {path: (mult, decay) for path, mult, decay in
            opt_lib.trainable_variables_report(optimizer, variables)}
  assert groups == {
      "net/backbone/kernel": (0.1, True), "net/backbone/bias": (0.1, False),
      "net/head/kernel": (1.0, True), "net/head/bias": (1.0, False),
      "net/head_bn/gamma": (1.0, False), "net/head_bn/beta": (1.0, False)}

  rng = np.random.default_rng(0)
  start = [v.numpy().copy() for v in variables]
  grads = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
  for _ in range(3):
    optimizer.apply_gradients(zip([tf.constant(g) for g in grads], variables))
  for v, w0, g in zip(variables, start, grads):
    mult, decay = groups[v.path]
    want = _adam_reference(w0.astype(np.float64), g, 0.01 * mult, 0.1 if decay else 0.0, 3)
    np.testing.assert_allclose(v.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=v.path)


def test_build_optimizer_schedule_and_mixed_precision():
  optimizer = opt_lib.build_optimizer(total_steps=50, base_learning_rate=1e-3,
                                      warmup_steps=100, mixed_precision=True)
  assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  # warm-up longer than the run is clipped to the run
  assert optimizer.inner_optimizer._learning_rate.warmup_steps == 50
  assert opt_lib.current_learning_rate(optimizer, 25) == pytest.approx(5e-4)


def test_extra_lr_multipliers_by_path():
  model = _TwoPart()
  model(np.zeros((1, 4), np.float32))
  optimizer = opt_lib.KMaXAdamW(0.01, backbone_multiplier=0.1,
                                lr_multipliers={r"head_bn/gamma$": 10.0,
                                                r"backbone/kernel$": 2.0})
  optimizer.build(model.trainable_variables)
  groups = {p: m for p, m, _ in
            opt_lib.trainable_variables_report(optimizer, model.trainable_variables)}
  assert groups["net/head_bn/gamma"] == 10.0 and groups["net/head_bn/beta"] == 1.0
  assert groups["net/backbone/kernel"] == pytest.approx(0.2)
  assert groups["net/backbone/bias"] == pytest.approx(0.1)
  assert optimizer.get_config()["lr_multipliers"] == {r"head_bn/gamma$": 10.0,
                                                      r"backbone/kernel$": 2.0}


@pytest.mark.parametrize("compiled", [False, True])
def test_fused_adam_matches_keras_adam(compiled, monkeypatch):
  calls = []
  fused = tf.raw_ops.ResourceApplyAdam
  monkeypatch.setattr(tf.raw_ops, "ResourceApplyAdam",
                      lambda **kw: (calls.append(1), fused(**kw))[1])
  rng = np.random.default_rng(1)
  init = [rng.normal(size=s).astype(np.float32) for s in ((4, 3), (3,))]
  ours = [keras.Variable(w, name=f"w{i}") for i, w in enumerate(init)]
  ref = [keras.Variable(w, name=f"w{i}") for i, w in enumerate(init)]
  opt = opt_lib.KMaXAdamW(0.01, weight_decay_rate=0.0, backbone_multiplier=1.0)
  ref_opt = keras.optimizers.Adam(0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
  grads = [[tf.constant(rng.normal(size=w.shape).astype(np.float32)) for w in init]
           for _ in range(4)]
  opt.build(ours)
  ref_opt.build(ref)

  def step(gs):
    opt.apply_gradients(zip(gs, ours))
    ref_opt.apply_gradients(zip(gs, ref))

  if compiled:
    step = tf.function(step)
  for gs in grads:
    step(gs)
  assert calls  # the fused kernel ran
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)  # f32 rounding
