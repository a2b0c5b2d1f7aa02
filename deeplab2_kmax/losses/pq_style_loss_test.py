"""PQ-style loss and matching against a loop-based numpy/scipy reference."""
import numpy as np
import tensorflow as tf
from scipy.optimize import linear_sum_assignment

from deeplab2_kmax.losses.ground_truth import prepare_ground_truth
from deeplab2_kmax.losses import loss_test_data as data
from deeplab2_kmax.losses.pq_style_loss import match_predictions
from deeplab2_kmax.losses.pq_style_loss import pq_style_loss

ALPHA = 0.75


def _reference(class_logits, mask_logits, labels, num_classes):
  """Returns (indices [B, M], class_term [B], dice_term [B]) computed by loops."""
  batch, num_slots = class_logits.shape[:2]
  masks = labels["masks"].reshape(batch, -1, labels["masks"].shape[-1])
  num_gt = masks.shape[-1]
  out_idx = np.full((batch, num_gt), -1)
  class_terms, dice_terms = [], []
  for b in range(batch):
    probs = data.softmax(mask_logits[b].reshape(-1, num_slots))       # [P, N]
    cprobs = data.softmax(class_logits[b])                            # [N, C+1]
    gts = [m for m in range(num_gt) if labels["mask_valid"][b, m] > 0]
    inside = masks[b].sum(-1) > 0
    p_in = probs * inside[:, None]
    sim = np.zeros((len(gts), num_slots))
    dice = np.zeros((len(gts), num_slots))
    for r, m in enumerate(gts):
      g = masks[b, :, m]
      for n in range(num_slots):
        dice[r, n] = (g * p_in[:, n]).sum() / (
            (g.sum() + p_in[:, n].sum()) / 2 + 1e-5)
        sim[r, n] = dice[r, n] * cprobs[n, labels["mask_classes"][b, m]]
    rows, cols = linear_sum_assignment(-sim)
    slot_of = {gts[r]: c for r, c in zip(rows, cols)}
    class_loss = 0.0
    for n in range(num_slots):
      matched = [m for m in gts if slot_of[m] == n]
      if matched:
        m = matched[0]
        target = labels["mask_classes"][b, m]
        weight = ALPHA * max(dice[gts.index(m), n], 1e-5)
      else:
        target = num_classes
        void = (probs[:, n] * ~inside).sum() / (probs[:, n].sum() + 1e-5)
        weight = (1 - ALPHA) * max(void, 1e-5)
      class_loss -= weight * data.log_softmax(class_logits[b, n])[target]
    class_terms.append(class_loss / num_slots)
    dice_loss = 0.0
    for m in gts:
      n = slot_of[m]
      out_idx[b, m] = n
      g = masks[b, :, m]
      d = (2 * (p_in[:, n] * g).sum() + 1) / (p_in[:, n].sum() + g.sum() + 1)
      weight = max(cprobs[n, labels["mask_classes"][b, m]], 1e-5)
      dice_loss += weight * (1 - d)
    dice_terms.append(ALPHA / num_slots * dice_loss)
  return out_idx, np.array(class_terms), np.array(dice_terms)


def _run(labels, outputs, num_classes):
  gt = prepare_ground_truth(labels, num_classes)
  mask_logits = tf.reshape(outputs["mask_logits"],
                           [outputs["mask_logits"].shape[0], -1,
                            outputs["mask_logits"].shape[-1]])
  match = match_predictions(outputs["class_logits"], mask_logits, gt)
  class_term, dice_term = pq_style_loss(outputs["class_logits"], mask_logits, gt,
                                        match, ALPHA)
  return match, class_term.numpy(), dice_term.numpy()


def test_matches_numpy_reference_on_random_cases():
  rng = np.random.default_rng(0)
  for _ in range(6):
    labels = data.make_labels(rng, batch=3)
    outputs = data.make_outputs(rng, batch=3)
    match, class_term, dice_term = _run(labels, outputs, 3)
    idx, ref_class, ref_dice = _reference(outputs["class_logits"],
                                          outputs["mask_logits"], labels, 3)
    np.testing.assert_array_equal(match.indices.numpy(), idx)
    np.testing.assert_allclose(class_term, ref_class, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dice_term, ref_dice, rtol=1e-5, atol=1e-7)


def test_no_segments_pushes_every_slot_to_void_and_is_finite():
  rng = np.random.default_rng(1)
  labels = data.make_labels(rng, batch=2, num_segments=[0, 2])
  outputs = data.make_outputs(rng, batch=2)
  match, class_term, dice_term = _run(labels, outputs, 3)
  np.testing.assert_array_equal(match.indices.numpy()[0], -1)
  assert dice_term[0] == 0.0
  _, ref_class, ref_dice = _reference(outputs["class_logits"],
                                      outputs["mask_logits"], labels, 3)
  np.testing.assert_allclose(class_term, ref_class, rtol=1e-5)
  np.testing.assert_allclose(dice_term, ref_dice, rtol=1e-5)
  assert np.all(np.isfinite(class_term)) and np.all(class_term > 0)


def test_perfect_prediction_has_near_zero_dice_term_and_low_class_term():
  # One image, 2 segments covering everything; slot 1 predicts seg 0, slot 0 seg 1.
  masks = np.zeros((1, 2, 2, 2), np.float32)
  masks[0, 0, :, 0] = 1.0
  masks[0, 1, :, 1] = 1.0
  labels = {"masks": masks, "mask_classes": np.array([[0, 1]], np.int32),
            "mask_valid": np.ones((1, 2), np.float32),
            "semantic_strided": np.array([[[0, 0], [1, 1]]], np.int32),
            "ignore_strided": np.zeros((1, 2, 2), np.float32),
            "pixel_weights": np.ones((1, 2, 2), np.float32)}
  big = 30.0
  mask_logits = np.full((1, 2, 2, 3), -big, np.float32)
  mask_logits[0, 0, :, 1] = big
  mask_logits[0, 1, :, 0] = big
  class_logits = np.full((1, 3, 3), -big, np.float32)
  class_logits[0, 1, 0] = big   # slot 1 -> class 0
  class_logits[0, 0, 1] = big   # slot 0 -> class 1
  class_logits[0, 2, 2] = big   # slot 2 -> void
  match, class_term, dice_term = _run(
      labels, {"class_logits": class_logits, "mask_logits": mask_logits}, 2)
  assert match.indices.numpy().tolist() == [[1, 0]]
  np.testing.assert_allclose(match.matched_dice.numpy()[0, :2], 1.0, atol=1e-4)
  np.testing.assert_allclose(dice_term, 0.0, atol=1e-6)
  np.testing.assert_allclose(class_term, 0.0, atol=1e-6)


def test_gradients_flow_to_both_logits_but_not_through_weights():
  rng = np.random.default_rng(2)
  labels = data.make_labels(rng)
  outputs = data.make_outputs(rng)
  gt = prepare_ground_truth(labels, 3)
  class_logits = tf.Variable(outputs["class_logits"])
  mask_logits = tf.Variable(outputs["mask_logits"].reshape(2, 30, 6))
  with tf.GradientTape() as tape:
    match = match_predictions(class_logits, mask_logits, gt)
    class_term, dice_term = pq_style_loss(class_logits, mask_logits, gt, match)
    total = tf.reduce_sum(class_term + dice_term)
  grads = tape.gradient(total, [class_logits, mask_logits])
  for grad in grads:
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    assert np.abs(grad.numpy()).sum() > 0
  # Class term alone: the dice weights are stop-gradient, so no mask gradient.
  with tf.GradientTape() as tape:
    class_term, _ = pq_style_loss(class_logits, mask_logits, gt, match)
  assert tape.gradient(tf.reduce_sum(class_term), mask_logits) is None
