"""The fast-path switch, and whole models with fast paths on and off.

With fast paths off every layer runs its plain `call` (the paper's math with Keras
layers); with them on, the forms of this package. Both must give the same outputs (and,
in training, the same gradients) up to float rounding, for every backbone family.
"""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.kernels import policy
from deeplab2_kmax.layers import test_utils
from deeplab2_kmax import model as model_lib

BACKBONES = {
    "resnet50": test_utils.TINY_RESNET_KWARGS,
    "axial_resnet50": dict(test_utils.TINY_RESNET_KWARGS, num_heads=2),
    "convnext_tiny": {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)},
}


def test_switches(monkeypatch):
  assert policy.enabled()
  monkeypatch.setenv(policy.ENV_VAR, "0")
  assert not policy.enabled()
  with policy.forced(True):
    assert policy.enabled()
  monkeypatch.setenv(policy.ENV_VAR, "1")
  assert policy.enabled()
  gin.parse_config("fast_paths.enabled = False")
  try:
    assert not policy.enabled()
  finally:
    gin.clear_config()
  assert policy.enabled()
  with policy.forced(False):
    assert not policy.enabled()
  assert policy.enabled()


def _model(backbone):
  keras.utils.set_random_seed(0)
  model = model_lib.build_model(3, backbone=backbone, backbone_kwargs=BACKBONES[backbone],
                                **test_utils.TINY_MODEL_KWARGS)
  images = np.random.default_rng(1).uniform(0, 255, (2, 65, 65, 3)).astype("float32")
  model(images, training=True)
  test_utils.randomize_batch_norms(model, np.random.default_rng(2))
  return model, images


def _flat(outputs):
  return {k: np.asarray(v) for k, v in outputs.items()
          if k in ("class_logits", "mask_logits", "pixel_embeddings", "semantic_logits")}


def _train_step(model, images):
  """Outputs and the gradient of a fixed scalar of them w.r.t. every trainable variable
  (BN moving statistics restored afterwards, so both runs start equal)."""
  saved = [v.numpy() for v in model.non_trainable_variables]
  with tf.GradientTape() as tape:
    out = model(images, training=True)
    loss = (tf.reduce_sum(tf.sin(out["class_logits"])) +
            tf.reduce_sum(tf.sin(out["mask_logits"])) +
            tf.reduce_sum(out["pixel_embeddings"] ** 2 * 0.5) +
            tf.reduce_sum(tf.sin(out["semantic_logits"])))
  grads = tape.gradient(loss, model.trainable_variables)
  for v, value in zip(model.non_trainable_variables, saved):
    v.assign(value)
  return _flat(out), [None if g is None else np.asarray(tf.convert_to_tensor(g))
                      for g in grads]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_model_with_fast_paths_on_equals_off(backbone):
  model, images = _model(backbone)
  fast = _flat(model(images, training=False))
  fast_train, fast_grads = _train_step(model, images)
  with policy.forced(False):
    plain = _flat(model(images, training=False))
    plain_train, plain_grads = _train_step(model, images)
  for key in fast:  # errors relative to the output's scale, as float rounding allows
    assert _relative(fast[key], plain[key]) < 2e-4, key
  for key in fast_train:
    assert _relative(fast_train[key], plain_train[key]) < 5e-4, key
  # Gradients relative to each variable's own scale; those that are mathematically zero
  # (e.g. the shift of a BN before a softmax) are compared at 1e-3 of the largest.
  largest = max(float(np.abs(b).max()) for b in plain_grads if b is not None)
  for var, a, b in zip(model.trainable_variables, fast_grads, plain_grads):
    assert (a is None) == (b is None), var.path
    if a is not None:
      scale = max(float(np.abs(b).max()), 1e-3 * largest)
      assert float(np.abs(a - b).max()) < 2e-3 * scale, var.path


def _relative(a, b):
  return float(np.abs(a - b).max()) / max(float(np.abs(b).max()), 1e-6)


def test_the_switch_changes_the_graph():
  """On: TF's fused batch norm and folded inference convs; off: neither."""
  model, images = _model("resnet50")

  def op_types(training):
    fn = tf.function(lambda x: model(x, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec(images.shape, tf.float32)).graph
    return {op.type for op in graph.get_operations()}

  on_train, on_infer = op_types(True), op_types(False)
  with policy.forced(False):
    off_train, off_infer = op_types(True), op_types(False)
  assert "FusedBatchNormV3" in on_train and "FusedBatchNormV3" not in off_train
  # Folded inference has no standalone BN arithmetic (Rsqrt of the variances at most).
  assert "Conv2D" in on_infer and "Conv2D" in off_infer
  assert len(on_infer) != len(off_infer) or on_infer != off_infer
