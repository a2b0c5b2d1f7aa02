"""PQ-style loss of MaX-DeepLab / kMaX-DeepLab, with its Hungarian matching.

Matching (`match_predictions`): similarity(gt m, prediction n) = dice(softmax over the
N slots of the mask logits restricted to pixels inside segments, gt mask m) x
probability of gt m's class under prediction n's class softmax (void column included in
the softmax, excluded from the product). The Hungarian matcher maximises the total
similarity (cost = -similarity). The stop-gradient weights the loss needs are computed
from the same prediction and returned with the matching, so a caller can reuse one
matching (and its weights) for several predictions, as deeplab2 does for the deep-
supervision outputs.

Loss (`pq_style_loss`), per example, as deeplab2 `max_deeplab_loss.py`:
* class term: mean over the N slots of alpha_n * w_n * CE(class logits_n, target_n);
  target = the matched gt's class for matched slots (alpha 0.75, w = stop-grad matched
  dice), void (index C) for unmatched slots (alpha 0.25, w = stop-grad fraction of the
  slot's predicted mask lying outside every segment); w >= 1e-5.
* dice term: alpha / N * sum over valid gt m of w_m * (1 - dice_m), with
  dice_m = (2 sum p g + 1) / (sum p + sum g + 1) on pixels inside segments,
  p = the matched slot's mask probability (softmax over slots), w_m = stop-grad matched
  class probability (>= 1e-5).
"""
from typing import NamedTuple

import tensorflow as tf

from deeplab2_kmax.losses.ground_truth import GroundTruth
from deeplab2_kmax.losses.hungarian_matching import assignment_matrix
from deeplab2_kmax.losses.hungarian_matching import hungarian_matching

_SIMILARITY_EPSILON = 1e-5
_MIN_WEIGHT = 1e-5


class MatchResult(NamedTuple):
  """A matching of gt slots to predictions plus its stop-gradient loss weights."""
  indices: tf.Tensor             # [B, M] int32 prediction index, -1 for unused slots
  assignment: tf.Tensor          # [B, M, N] float one-hot (zero rows when unused)
  matched_dice: tf.Tensor        # [B, N] dice of each slot with its gt (0 if none)
  matched_class_prob: tf.Tensor  # [B, M] prob of the gt class at its matched slot
  void_ratio: tf.Tensor          # [B, N] share of each slot's mask outside segments


def mask_probabilities(mask_logits: tf.Tensor) -> tf.Tensor:
  """[B, P, N] logits -> per-pixel softmax over the N slots."""
  return tf.nn.softmax(mask_logits, axis=-1)


def dice_similarity(gt_masks: tf.Tensor, pred_masks: tf.Tensor) -> tf.Tensor:
  """Soft dice [B, M, N] between gt masks [B, P, M] and predicted masks [B, P, N]."""
  intersection = tf.einsum("bpm,bpn->bmn", gt_masks, pred_masks)
  gt_area = tf.reduce_sum(gt_masks, axis=1)[:, :, None]
  pred_area = tf.reduce_sum(pred_masks, axis=1)[:, None, :]
  return intersection / ((gt_area + pred_area) / 2.0 + _SIMILARITY_EPSILON)


def match_predictions(class_logits: tf.Tensor, mask_logits: tf.Tensor,
                      gt: GroundTruth) -> MatchResult:
  """Hungarian-matches one prediction (class [B,N,C+1], masks [B,P,N]) to gt."""
  class_logits = tf.stop_gradient(tf.cast(class_logits, tf.float32))
  probs = mask_probabilities(tf.stop_gradient(tf.cast(mask_logits, tf.float32)))
  num_slots = probs.shape[-1]
  num_classes = class_logits.shape[-1] - 1
  dice = dice_similarity(gt.masks, probs * gt.in_segment[:, :, None])  # [B,M,N]
  class_probs = tf.nn.softmax(class_logits, axis=-1)
  # Probability of gt m's class under slot n; 0 for unused slots (class = void).
  gt_onehot = tf.one_hot(gt.classes, num_classes + 1)[..., :num_classes]
  class_sim = tf.einsum("bmc,bnc->bmn", gt_onehot, class_probs[..., :num_classes])
  cost = -tf.transpose(dice * class_sim, [0, 2, 1])                    # [B,N,M]
  indices = hungarian_matching(cost, gt.valid)
  assignment = assignment_matrix(indices, num_slots)
  matched_dice = tf.reduce_sum(dice * assignment, axis=1)
  matched_class_prob = tf.reduce_sum(class_sim * assignment, axis=2)
  outside = 1.0 - gt.in_segment
  void_ratio = (tf.einsum("bp,bpn->bn", outside, probs) /
                (tf.reduce_sum(probs, axis=1) + _SIMILARITY_EPSILON))
  return MatchResult(indices=indices, assignment=assignment,
                     matched_dice=matched_dice,
                     matched_class_prob=matched_class_prob,
                     void_ratio=void_ratio)


def pq_style_loss(class_logits: tf.Tensor, mask_logits: tf.Tensor,
                  gt: GroundTruth, match: MatchResult,
                  focal_alpha: float = 0.75):
  """Per-example PQ-style loss terms.

  Args:
    class_logits: [B, N, C+1] class logits, void last.
    mask_logits: [B, P, N] flattened mask logits.
    gt: the GroundTruth.
    match: matching (and its weights) to use; may come from another prediction.
    focal_alpha: weight of the matched (positive) class terms and of the dice term;
      unmatched (void-target) class terms get 1 - focal_alpha.

  Returns:
    (class_term [B], dice_term [B]).
  """
  class_logits = tf.cast(class_logits, tf.float32)
  mask_logits = tf.cast(mask_logits, tf.float32)
  num_slots = class_logits.shape[1]
  num_classes = class_logits.shape[-1] - 1
  assignment = match.assignment                                     # [B, M, N]
  positive = tf.reduce_sum(assignment, axis=1)                      # [B, N]
  # Target class per slot: the matched gt class, or void (= num_classes).
  gt_onehot = tf.one_hot(gt.classes, num_classes + 1)               # [B, M, C+1]
  void_onehot = tf.one_hot(num_classes, num_classes + 1)
  target = (tf.einsum("bmn,bmc->bnc", assignment, gt_onehot) +
            (1.0 - positive)[..., None] * void_onehot)
  cross_entropy = tf.nn.softmax_cross_entropy_with_logits(target, class_logits)
  weights = (positive * (focal_alpha * tf.maximum(match.matched_dice, _MIN_WEIGHT))
             + (1.0 - positive) * ((1.0 - focal_alpha) *
                                   tf.maximum(match.void_ratio, _MIN_WEIGHT)))
  weights = tf.stop_gradient(weights)
  class_term = tf.reduce_sum(weights * cross_entropy, axis=-1) / num_slots

  # Dice term on the matched slots' masks, restricted to pixels inside segments.
  probs = mask_probabilities(mask_logits) * gt.in_segment[:, :, None]
  matched_probs = tf.einsum("bpn,bmn->bpm", probs, assignment)      # [B, P, M]
  intersection = tf.reduce_sum(matched_probs * gt.masks, axis=1)
  denominator = (tf.reduce_sum(matched_probs, axis=1) +
                 tf.reduce_sum(gt.masks, axis=1))
  dice_loss = 1.0 - (2.0 * intersection + 1.0) / (denominator + 1.0)
  dice_weights = tf.stop_gradient(
      gt.valid * tf.maximum(match.matched_class_prob, _MIN_WEIGHT))
  dice_term = (focal_alpha / num_slots) * tf.reduce_sum(dice_weights * dice_loss,
                                                        axis=-1)
  return class_term, dice_term
