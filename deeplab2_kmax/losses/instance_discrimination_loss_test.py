"""Instance discrimination losses against loop-based numpy references."""
import numpy as np
import tensorflow as tf

from deeplab2_kmax.losses.ground_truth import prepare_ground_truth
from deeplab2_kmax.losses.instance_discrimination_loss import pixel_contrastive_loss
from deeplab2_kmax.losses import loss_test_data as data
from deeplab2_kmax.losses.instance_discrimination_loss import (
    prototype_discrimination_loss)

TEMPERATURE = 0.3


def _flat(labels, outputs):
  batch = labels["masks"].shape[0]
  masks = labels["masks"].reshape(batch, -1, labels["masks"].shape[-1])
  emb = outputs["pixel_embeddings"].reshape(batch, masks.shape[1], -1)
  return masks * labels["mask_valid"][:, None, :], emb


def _contrastive_reference(labels, outputs, indices):
  masks, emb = _flat(labels, outputs)
  result = []
  for b in range(masks.shape[0]):
    seg = [int(np.argmax(masks[b, p])) if masks[b, p].sum() else -1
           for p in indices[b]]
    valid = [s >= 0 for s in seg]
    feats = emb[b, indices[b]]
    total, count = 0.0, 0
    for i in range(len(seg)):
      if not valid[i]:
        continue
      logits = np.array([feats[i] @ feats[j] / TEMPERATURE if valid[j] else -1e9
                         for j in range(len(seg))])
      same = [j for j in range(len(seg)) if seg[j] == seg[i]]
      total -= np.mean(data.log_softmax(logits)[same])
      count += 1
    result.append(total / count if count else 0.0)
  return np.array(result)


def test_pixel_contrastive_matches_numpy():
  rng = np.random.default_rng(0)
  for _ in range(3):
    labels = data.make_labels(rng, batch=2)
    outputs = data.make_outputs(rng, batch=2)
    indices = np.stack([rng.permutation(30)[:12] for _ in range(2)]).astype(
        np.int32)
    gt = prepare_ground_truth(labels, 3)
    emb = tf.reshape(outputs["pixel_embeddings"], [2, 30, 4])
    got = pixel_contrastive_loss(emb, gt, indices, TEMPERATURE).numpy()
    np.testing.assert_allclose(
        got, _contrastive_reference(labels, outputs, indices), rtol=1e-5)


def test_pixel_contrastive_hand_case():
  # Two segments, one sampled pixel each + a second pixel of segment 0.
  # Embeddings: e0 = e1 (segment 0), e2 orthogonal (segment 1).
  masks = np.array([[[[1, 0], [1, 0], [0, 1]]]], np.float32)  # [1, 1, 3, 2]
  labels = {"masks": masks, "mask_classes": np.array([[0, 1]], np.int32),
            "mask_valid": np.ones((1, 2), np.float32),
            "semantic_strided": np.zeros((1, 1, 3), np.int32),
            "ignore_strided": np.zeros((1, 1, 3), np.float32),
            "pixel_weights": np.ones((1, 1, 3), np.float32)}
  emb = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], np.float32)
  gt = prepare_ground_truth(labels, 2)
  got = pixel_contrastive_loss(emb, gt, np.array([[0, 1, 2]], np.int32), 1.0)
  e = np.e
  row_seg0 = -np.log(e / (2 * e + 1))      # both same-segment logits are 1
  row_seg1 = -np.log(e / (e + 2))
  np.testing.assert_allclose(got.numpy(), [(2 * row_seg0 + row_seg1) / 3],
                             rtol=1e-6)


def test_prototype_variant_matches_numpy_and_uses_thing_pixels_only():
  rng = np.random.default_rng(1)
  labels = data.make_labels(rng, batch=2, num_segments=[3, 4])
  labels["mask_is_thing"][:, :2] = 1.0
  outputs = data.make_outputs(rng, batch=2)
  masks, emb = _flat(labels, outputs)
  expected = []
  for b in range(2):
    valid = labels["mask_valid"][b] > 0
    protos = masks[b].T @ emb[b] / np.maximum(masks[b].sum(0), 1)[:, None]
    protos /= np.maximum(np.linalg.norm(protos, axis=-1, keepdims=True), 1e-12)
    total, count = 0.0, 0
    for p in range(masks.shape[1]):
      if not masks[b, p].sum():
        continue
      m = int(np.argmax(masks[b, p]))
      if not labels["mask_is_thing"][b, m]:
        continue
      logits = np.where(valid, protos @ emb[b, p] / TEMPERATURE, -1e9)
      total -= data.log_softmax(logits)[m]
      count += 1
    expected.append(total / count)
  gt = prepare_ground_truth(labels, 3)
  got = prototype_discrimination_loss(tf.constant(emb), gt, TEMPERATURE)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_zero_segments_is_zero_and_gradient_finite():
  rng = np.random.default_rng(2)
  labels = data.make_labels(rng, batch=1, num_segments=[0])
  gt = prepare_ground_truth(labels, 3)
  emb = tf.Variable(tf.math.l2_normalize(tf.random.normal([1, 30, 4]), -1))
  with tf.GradientTape(persistent=True) as tape:
    contrastive = pixel_contrastive_loss(emb, gt, tf.range(8)[None], 0.3)
    prototype = prototype_discrimination_loss(emb, gt, 0.3)
  for loss in (contrastive, prototype):
    assert loss.numpy().tolist() == [0.0]
    assert np.all(np.isfinite(tape.gradient(loss, emb).numpy()))


def _gram_reference(feats, valid):
  """Values and gradient (upstream-weighted) by autodiff of the dense form."""
  bias = (1.0 - valid) * -1e9
  logits = tf.einsum("bkd,bjd->bkj", feats / TEMPERATURE, feats) + bias[:, None, :]
  return tf.reduce_logsumexp(logits, axis=-1)


def _value_and_grad(fn, feats, upstream):
  with tf.GradientTape() as tape:
    tape.watch(feats)
    value = fn(feats)
    loss = tf.reduce_sum(value * upstream)
  return value.numpy(), tape.gradient(loss, feats).numpy()


def test_gram_logsumexp_matches_autodiff_values_and_gradients():
  from deeplab2_kmax.losses.instance_discrimination_loss import gram_logsumexp  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  # Not normalized (norms spread), some columns invalid, one row with no valid column
  # except through others.
  feats = tf.constant(rng.normal(size=(2, 9, 5)).astype(np.float32))
  valid = tf.constant((rng.uniform(size=(2, 9)) >= 0.3).astype(np.float32))
  upstream = tf.constant(rng.normal(size=(2, 9)).astype(np.float32))
  want = _value_and_grad(lambda f: _gram_reference(f, valid), feats, upstream)
  got = _value_and_grad(lambda f: gram_logsumexp(f, valid, TEMPERATURE), feats,
                        upstream)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
  compiled = tf.function(lambda f: tf.gradients(
      tf.reduce_sum(gram_logsumexp(f, valid, TEMPERATURE) * upstream), f)[0],
                         jit_compile=True)
  np.testing.assert_allclose(compiled(feats).numpy(), want[1], rtol=1e-5, atol=1e-6)


def test_gram_logsumexp_bfloat16_matmuls_close_to_float32():
  from deeplab2_kmax.losses.instance_discrimination_loss import gram_logsumexp  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  feats = tf.math.l2_normalize(
      tf.constant(rng.normal(size=(2, 256, 32)).astype(np.float32)), -1)
  valid = tf.constant((rng.uniform(size=(2, 256)) >= 0.2).astype(np.float32))
  upstream = tf.constant(rng.uniform(size=(2, 256)).astype(np.float32))
  want = _value_and_grad(lambda f: _gram_reference(f, valid), feats, upstream)
  got = _value_and_grad(
      lambda f: gram_logsumexp(f, valid, TEMPERATURE, tf.bfloat16), feats, upstream)
  assert got[0].dtype == np.float32 and got[1].dtype == np.float32
  np.testing.assert_allclose(got[0], want[0], atol=1e-2)
  scale = np.abs(want[1]).max()
  np.testing.assert_allclose(got[1], want[1], atol=2e-2 * scale)
  # ... but not equal: the bfloat16 path is really taken.
  assert np.abs(got[0] - want[0]).max() > 1e-5
