"""Semantic mean IoU, streamed over int maps (train ids; ignore_label = void).

A confusion matrix [C, C + 1] is accumulated with one bincount per image: rows are the
ground-truth classes (ignore pixels skipped), columns the predicted class, the extra
last column counts pixels the prediction left void (post-processing's unassigned
pixels), which are misses of the ground-truth class. IoU_c = TP / (TP + FP + FN); the
mean runs over the classes with TP + FP + FN > 0.
"""

from typing import Dict, Optional, Sequence

import numpy as np


class MeanIoU:
  """Streaming mIoU. `update(gt, pred)` takes semantic maps [H, W] or [B, H, W]."""

  def __init__(self, num_classes: int, ignore_label: int,
               class_names: Optional[Sequence[str]] = None):
    self.num_classes = int(num_classes)
    self.ignore_label = int(ignore_label)
    self.class_names = list(class_names) if class_names is not None else None
    self.reset()

  def reset(self):
    self.confusion = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

  def update(self, gt: np.ndarray, pred: np.ndarray):
    gt = np.asarray(gt).astype(np.int64).reshape(-1)
    pred = np.asarray(pred).astype(np.int64).reshape(-1)
    if gt.shape != pred.shape:
      raise ValueError(f"gt has {gt.size} pixels, prediction {pred.size}")
    valid = gt != self.ignore_label
    bad = valid & ((gt < 0) | (gt >= self.num_classes))
    if bad.any():
      raise ValueError(f"ground-truth class {int(gt[bad][0])} outside 0..{self.num_classes - 1}"
                       f" and not ignore_label {self.ignore_label}")
    gt = gt[valid]
    pred = pred[valid]
    pred_void = (pred == self.ignore_label)
    bad = ~pred_void & ((pred < 0) | (pred >= self.num_classes))
    if bad.any():
      raise ValueError(f"predicted class {int(pred[bad][0])} outside 0..{self.num_classes - 1}"
                       f" and not ignore_label {self.ignore_label}")
    pred = np.where(pred_void, self.num_classes, pred)
    cols = self.num_classes + 1
    self.confusion += np.bincount(gt * cols + pred, minlength=self.num_classes * cols
                                  ).reshape(self.num_classes, cols)

  def update_panoptic(self, gt_panoptic, pred_panoptic, label_divisor: int):
    """Same from panoptic maps in the internal encoding (semantic = value // D)."""
    self.update(np.asarray(gt_panoptic) // label_divisor,
                np.asarray(pred_panoptic) // label_divisor)

  def result(self) -> Dict:
    c = self.confusion
    tp = np.diag(c[:, :self.num_classes]).astype(np.float64)
    gt_total = c.sum(axis=1)
    pred_total = c[:, :self.num_classes].sum(axis=0)
    denom = gt_total + pred_total - tp
    present = denom > 0
    iou = np.where(present, tp / np.maximum(denom, 1), 0.0)
    total = c.sum()
    names = self.class_names or [str(i) for i in range(self.num_classes)]
    return {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "n": int(present.sum()),
        "per_class": {names[i]: float(iou[i]) for i in range(self.num_classes)},
    }
