"""KMaXLoss: composition, deep supervision, XLA == eager, gradients, descent."""
import gin
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.losses.ground_truth import prepare_ground_truth
from deeplab2_kmax.losses.kmax_loss import KMaXLoss
from deeplab2_kmax.losses.kmax_loss import LOSS_KEYS
from deeplab2_kmax.losses import loss_test_data as data
from deeplab2_kmax.losses.mask_id_loss import mask_id_cross_entropy
from deeplab2_kmax.losses.pq_style_loss import match_predictions
from deeplab2_kmax.losses.pq_style_loss import pq_style_loss
from deeplab2_kmax.losses.semantic_loss import semantic_cross_entropy

SEED = tf.constant([1, 2], tf.int64)


def _case(seed=0, num_aux=2, **kwargs):
  rng = np.random.default_rng(seed)
  return (data.make_outputs(rng, num_aux=num_aux, **kwargs),
          data.make_labels(rng, **kwargs))


def _numpy(result):
  return {k: float(v.numpy()) for k, v in result.items()}


def test_keys_weights_and_composition_from_the_terms():
  outputs, labels = _case(num_aux=0)
  loss = KMaXLoss(instance_discrimination_sample_k=8)
  result = _numpy(loss(outputs, labels, seed=SEED))
  assert set(result) == set(LOSS_KEYS)
  # Recompute each term from the term modules.
  gt = prepare_ground_truth(labels, 3)
  mask_logits = tf.reshape(outputs["mask_logits"], [2, 30, 6])
  match = match_predictions(outputs["class_logits"], mask_logits, gt)
  cls, dice = pq_style_loss(outputs["class_logits"], mask_logits, gt, match)
  np.testing.assert_allclose(result["pq_style"], np.mean(cls + dice), rtol=1e-5)
  np.testing.assert_allclose(
      result["mask_id"],
      np.mean(mask_id_cross_entropy(mask_logits, gt, match.assignment)),
      rtol=1e-5)
  np.testing.assert_allclose(
      result["semantic"],
      np.mean(semantic_cross_entropy(tf.reshape(outputs["semantic_logits"],
                                                [2, 30, 3]),
                                     gt.semantic, gt.semantic_weights)),
      rtol=1e-5)
  expected_total = (3.0 * result["pq_style"] + 0.3 * result["mask_id"] +
                    result["instance_discrimination"] + result["semantic"])
  np.testing.assert_allclose(result["total"], expected_total, rtol=1e-5)
  assert result["instance_discrimination"] > 0


def test_deep_supervision_sums_layers_and_reuses_final_matching():
  outputs, labels = _case(num_aux=0)
  copies = dict(outputs, aux_outputs=[
      {k: outputs[k] for k in ("class_logits", "mask_logits",
                               "pixel_embeddings")}] * 2)
  loss = KMaXLoss(instance_discrimination_sample_k=0)
  single, triple = _numpy(loss(outputs, labels)), _numpy(loss(copies, labels))
  for key in ("pq_style", "mask_id", "instance_discrimination"):
    np.testing.assert_allclose(triple[key], 3 * single[key], rtol=1e-5)
  np.testing.assert_allclose(triple["semantic"], single["semantic"], rtol=1e-6)
  # Different aux predictions: reuse and recompute give different pq losses.
  outputs, labels = _case(seed=5, num_aux=2)
  reuse = _numpy(KMaXLoss(aux_matching="reuse")(outputs, labels, seed=SEED))
  recompute = _numpy(KMaXLoss(aux_matching="recompute")(outputs, labels,
                                                          seed=SEED))
  assert recompute["pq_style"] < reuse["pq_style"]  # each layer's own optimum
  np.testing.assert_allclose(recompute["semantic"], reuse["semantic"])


def test_global_batch_size_scales_to_a_cross_replica_sum():
  outputs, labels = _case(num_aux=1)
  local = _numpy(KMaXLoss()(outputs, labels, seed=SEED))
  scaled = _numpy(KMaXLoss(global_batch_size=8)(outputs, labels, seed=SEED))
  for key in LOSS_KEYS:  # local batch 2 of global 8: sum / 8 = mean * 2 / 8.
    np.testing.assert_allclose(scaled[key], local[key] * 2 / 8, rtol=1e-5)


def test_xla_equals_eager_with_empty_example():
  outputs, labels = _case(num_aux=1, batch=2)
  zero = data.make_labels(np.random.default_rng(9), batch=2,
                          num_segments=[0, 3])
  loss = KMaXLoss(instance_discrimination_sample_k=16, semantic_sample_k=12)
  compiled_loss = tf.function(loss, jit_compile=True)
  for lab in (labels, zero):
    eager = _numpy(loss(outputs, lab, seed=SEED))
    compiled = _numpy(compiled_loss(outputs, lab, seed=SEED))
    for key in LOSS_KEYS:
      np.testing.assert_allclose(compiled[key], eager[key], rtol=2e-5,
                                 atol=1e-6, err_msg=key)
      assert np.isfinite(eager[key])


def test_gradients_finite_and_descent_lowers_total():
  outputs, labels = _case(num_aux=1)
  variables = {k: tf.Variable(outputs[k]) for k in (
      "class_logits", "mask_logits", "pixel_embeddings", "semantic_logits")}
  aux = {k: tf.Variable(outputs["aux_outputs"][0][k]) for k in (
      "class_logits", "mask_logits", "pixel_embeddings")}
  loss = KMaXLoss(instance_discrimination_sample_k=16)
  trainable = list(variables.values()) + list(aux.values())

  @tf.function(jit_compile=True)
  def step():
    with tf.GradientTape() as tape:
      preds = dict(variables, aux_outputs=[aux])
      preds["pixel_embeddings"] = tf.math.l2_normalize(
          variables["pixel_embeddings"], -1)
      total = loss(preds, labels, seed=SEED)["total"]
    grads = tape.gradient(total, trainable)
    for var, grad in zip(trainable, grads):
      var.assign_sub(1.0 * grad)
    return total, grads

  first, grads = step()
  for grad in grads:
    assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).sum() > 0
  totals = [float(first)] + [float(step()[0]) for _ in range(20)]
  assert totals[-1] < 0.8 * totals[0], totals


def test_gin_configurable_and_errors():
  gin.clear_config()
  gin.parse_config("KMaXLoss.pq_style_weight = 2.0\n"
                   "KMaXLoss.aux_matching = 'recompute'")
  loss = KMaXLoss()
  gin.clear_config()
  assert loss.pq_style_weight == 2.0 and loss.aux_matching == "recompute"
  with pytest.raises(ValueError):
    KMaXLoss(aux_matching="sometimes")
  outputs, labels = _case(num_aux=0)
  no_semantic = {k: v for k, v in outputs.items() if k != "semantic_logits"}
  with pytest.raises(KeyError, match="semantic_logits"):
    KMaXLoss()(no_semantic, labels)
  assert float(KMaXLoss(semantic_weight=0.0)(no_semantic, labels)["semantic"]) == 0
  bad = dict(outputs, mask_logits=outputs["mask_logits"][:, :4])
  with pytest.raises(ValueError, match="output_stride"):
    KMaXLoss()(bad, labels)
  finer = dict(outputs, semantic_logits=np.zeros((2, 9, 11, 3), np.float32))
  with pytest.raises(ValueError, match="label_stride"):
    KMaXLoss()(finer, labels)


def _stride2_case(seed=0, num_aux=2):
  """Cityscapes-like: labels and masks on a 9x11 stride-2 grid (crop 17x21), semantic
  logits on the 5x6 stride-4 grid."""
  rng = np.random.default_rng(seed)
  labels = data.make_labels(rng, height=9, width=11, max_segments=5)
  outputs = data.make_outputs(rng, height=9, width=11, num_slots=7, num_aux=num_aux)
  outputs["semantic_logits"] = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  return outputs, labels


@pytest.mark.parametrize("sample_k,top_k", [(0, 1.0), (0, 0.2), (12, 1.0)])
def test_stride2_masks_with_stride4_semantic_logits(sample_k, top_k):
  outputs, labels = _stride2_case()
  loss = KMaXLoss(instance_discrimination_sample_k=16, semantic_sample_k=sample_k,
                  semantic_top_k_percent=top_k)
  eager = _numpy(loss(outputs, labels, seed=SEED))
  compiled = _numpy(tf.function(loss, jit_compile=True)(outputs, labels, seed=SEED))
  for key in LOSS_KEYS:
    np.testing.assert_allclose(compiled[key], eager[key], rtol=2e-5, atol=1e-6,
                               err_msg=key)
    assert np.isfinite(eager[key]) and eager[key] > 0, key
  # The semantic term equals the loss on the stride-4 labels [::2, ::2], by numpy.
  sem = labels["semantic_strided"][:, ::2, ::2].reshape(2, -1)
  ignore = labels["ignore_strided"][:, ::2, ::2].reshape(2, -1)
  weights = labels["pixel_weights"][:, ::2, ::2].reshape(2, -1) * (1 - ignore)
  logp = data.log_softmax(outputs["semantic_logits"].reshape(2, 30, 3))
  nll = -np.take_along_axis(logp, np.clip(sem, 0, 2)[..., None], -1)[..., 0] * weights
  if sample_k == 0:
    k = 30 if top_k == 1.0 else 6
    top = -np.sort(-nll, axis=1)[:, :k]
    counted = np.take_along_axis((weights > 0) * 1.0, np.argsort(-nll, axis=1)[:, :k], 1)
    want = np.mean(top.sum(1) / counted.sum(1))
    np.testing.assert_allclose(eager["semantic"], want, rtol=1e-5)
  # The mask terms see the full stride-2 grid: same as with stride-2 semantic logits.
  same_grid = dict(outputs, semantic_logits=np.zeros((2, 9, 11, 3), np.float32))
  ref = _numpy(loss(same_grid, labels, seed=SEED))
  for key in ("pq_style", "mask_id", "instance_discrimination"):
    np.testing.assert_allclose(eager[key], ref[key], rtol=1e-6, err_msg=key)


def test_stride2_gradients_finite_under_xla():
  outputs, labels = _stride2_case(seed=3, num_aux=1)
  variables = [tf.Variable(outputs[k]) for k in (
      "class_logits", "mask_logits", "pixel_embeddings", "semantic_logits")]
  loss = KMaXLoss(instance_discrimination_sample_k=16, semantic_top_k_percent=0.2)

  @tf.function(jit_compile=True)
  def grads():
    with tf.GradientTape() as tape:
      preds = dict(zip(("class_logits", "mask_logits", "pixel_embeddings",
                        "semantic_logits"), variables),
                   aux_outputs=outputs["aux_outputs"])
      total = loss(preds, labels, seed=SEED)["total"]
    return tape.gradient(total, variables)

  for grad in grads():
    assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).sum() > 0


def test_batch_without_segments_is_finite_and_only_pushes_to_void():
  rng = np.random.default_rng(3)
  outputs = data.make_outputs(rng, num_aux=1)
  labels = data.make_labels(rng, num_segments=[0, 0])
  variables = {k: tf.Variable(outputs[k]) for k in (
      "class_logits", "mask_logits", "pixel_embeddings", "semantic_logits")}
  with tf.GradientTape() as tape:
    result = KMaXLoss()(dict(variables, aux_outputs=outputs["aux_outputs"]),
                        labels, seed=SEED)
  values = _numpy(result)
  assert values["pq_style"] > 0
  assert values["mask_id"] == values["instance_discrimination"] == 0.0
  assert values["semantic"] == 0.0
  grads = tape.gradient(result["total"], list(variables.values()))
  assert np.abs(grads[0].numpy()).sum() > 0   # class logits pushed to void
  for grad in grads:
    assert grad is None or np.all(np.isfinite(grad.numpy()))


def test_bfloat16_outputs_are_accepted():
  outputs, labels = _case(num_aux=1)
  low = {k: tf.cast(v, tf.bfloat16) for k, v in outputs.items()
         if k != "aux_outputs"}
  low["aux_outputs"] = [{k: tf.cast(v, tf.bfloat16) for k, v in aux.items()}
                        for aux in outputs["aux_outputs"]]
  loss = KMaXLoss(instance_discrimination_sample_k=0)
  full, half = _numpy(loss(outputs, labels)), _numpy(loss(low, labels))
  assert all(v.dtype == tf.float32 for v in loss(low, labels).values())
  np.testing.assert_allclose(half["total"], full["total"], rtol=0.05)


def test_instance_discrimination_matmul_dtype_follows_the_global_policy():
  import keras  # pylint: disable=g-import-not-at-top
  outputs, labels = _case(num_aux=1)
  exact = _numpy(KMaXLoss()(outputs, labels, seed=SEED))
  forced = _numpy(KMaXLoss(instance_discrimination_matmul_dtype="bfloat16")(
      outputs, labels, seed=SEED))
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("mixed_bfloat16")
  try:
    auto = _numpy(KMaXLoss()(outputs, labels, seed=SEED))
    pinned = _numpy(KMaXLoss(instance_discrimination_matmul_dtype="float32")(
        outputs, labels, seed=SEED))
  finally:
    keras.config.set_dtype_policy(previous)
  assert auto == forced and pinned == exact      # the same sampled pixels
  key = "instance_discrimination"
  assert auto[key] != exact[key]                 # bfloat16 matmuls really used
  np.testing.assert_allclose(auto[key], exact[key], rtol=2e-3)
  assert auto["pq_style"] == exact["pq_style"]   # other terms stay float32
  with pytest.raises(ValueError, match="instance_discrimination_matmul_dtype"):
    KMaXLoss(instance_discrimination_matmul_dtype="float16")
