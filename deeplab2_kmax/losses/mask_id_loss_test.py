"""Mask-ID cross-entropy against numpy."""
import numpy as np
import tensorflow as tf

from deeplab2_kmax.losses.ground_truth import prepare_ground_truth
from deeplab2_kmax.losses.hungarian_matching import assignment_matrix
from deeplab2_kmax.losses import loss_test_data as data
from deeplab2_kmax.losses.mask_id_loss import mask_id_cross_entropy


def _reference(mask_logits, labels, indices):
  batch, height, width, slots = mask_logits.shape
  logits = mask_logits.reshape(batch, -1, slots)
  masks = labels["masks"].reshape(batch, height * width, -1)
  weights = labels["pixel_weights"].reshape(batch, -1)
  result = []
  for b in range(batch):
    total, count = 0.0, 0
    for p in range(height * width):
      segments = np.flatnonzero(masks[b, p] * labels["mask_valid"][b])
      if not segments.size or weights[b, p] == 0:
        continue
      target = indices[b, segments[0]]
      total -= weights[b, p] * data.log_softmax(logits[b, p])[target]
      count += 1
    result.append(total / count if count else 0.0)
  return np.array(result)


def _loss(mask_logits, labels, indices, slots=6):
  gt = prepare_ground_truth(labels, 3)
  flat = tf.reshape(mask_logits, [mask_logits.shape[0], -1, slots])
  return mask_id_cross_entropy(flat, gt, assignment_matrix(indices, slots)).numpy()


def test_random_cases_match_numpy():
  rng = np.random.default_rng(0)
  for _ in range(4):
    labels = data.make_labels(rng, batch=3)
    logits = data.make_outputs(rng, batch=3)["mask_logits"]
    indices = np.stack([rng.permutation(6)[:4] for _ in range(3)])
    indices = np.where(labels["mask_valid"] > 0, indices, -1).astype(np.int32)
    np.testing.assert_allclose(_loss(logits, labels, indices),
                               _reference(logits, labels, indices), rtol=1e-5)


def test_hand_computed_value_and_empty_image():
  # 1x2 image, one segment on pixel 0 matched to slot 1; pixel 1 is void.
  labels = {"masks": np.array([[[[1.0], [0.0]]]], np.float32),
            "mask_classes": np.array([[0]], np.int32),
            "mask_valid": np.array([[1.0]], np.float32),
            "semantic_strided": np.array([[[0, 255]]], np.int32),
            "ignore_strided": np.array([[[0.0, 1.0]]], np.float32),
            "pixel_weights": np.array([[[1.0, 0.0]]], np.float32)}
  logits = np.zeros((1, 1, 2, 2), np.float32)
  logits[0, 0, 0] = [0.0, np.log(3.0)]          # p(slot 1) = 3/4
  got = _loss(logits, labels, np.array([[1]], np.int32), slots=2)
  np.testing.assert_allclose(got, [-np.log(0.75)], rtol=1e-6)
  labels["mask_valid"][:] = 0.0                    # no segment: loss 0, finite
  got = _loss(logits, labels, np.array([[-1]], np.int32), slots=2)
  np.testing.assert_array_equal(got, [0.0])
