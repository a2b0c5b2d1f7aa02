"""Instance AP / AP50 of thing classes with pycocotools (mask IoU, RLE).

Ground truth: every thing instance (thing class, instance > 0) of the internal panoptic
map is a COCO annotation; the crowd region of a thing class (instance 0) is one
`iscrowd=1` annotation, which COCOeval uses to ignore detections falling on it.
Detections: the thing segments of the post-processed prediction with the merger's
segment scores (class probability × mask score).
"""

import contextlib
import io
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _rle(binary: np.ndarray) -> Dict:
  return mask_util.encode(np.asfortranarray(binary.astype(np.uint8)))


class InstanceAP:
  """Streaming COCO mask AP over int panoptic maps in the internal encoding."""

  def __init__(self, label_divisor: int, ignore_label: int,
               thing_train_ids: Iterable[int],
               category_ids: Optional[Sequence[int]] = None):
    self.label_divisor = int(label_divisor)
    self.ignore_label = int(ignore_label)
    self.thing_train_ids = sorted(int(t) for t in thing_train_ids)
    self.category_ids = (list(category_ids) if category_ids is not None else None)
    self.reset()

  def reset(self):
    self.images, self.gt_anns, self.detections = [], [], []

  def _category(self, train_id: int) -> int:
    return int(self.category_ids[train_id]) if self.category_ids else int(train_id)

  def update(self, gt_panoptic: np.ndarray, pred_panoptic: np.ndarray,
             segment_ids: Sequence[int], segment_scores: Sequence[float],
             num_segments: Optional[int] = None):
    """Adds one image: maps [H, W] plus the merger's segment ids/scores."""
    gt = np.asarray(gt_panoptic).astype(np.int64)
    pred = np.asarray(pred_panoptic).astype(np.int64)
    if gt.shape != pred.shape or gt.ndim != 2:
      raise ValueError(f"expected two [H, W] maps, got {gt.shape} and {pred.shape}")
    image_id = len(self.images) + 1
    self.images.append({"id": image_id, "height": gt.shape[0], "width": gt.shape[1]})
    values, _ = np.unique(gt, return_counts=True)
    for v in values.tolist():
      sem, inst = divmod(v, self.label_divisor)
      if sem == self.ignore_label or sem not in self.thing_train_ids:
        continue
      binary = gt == v
      rle = _rle(binary)
      self.gt_anns.append({
          "id": len(self.gt_anns) + 1, "image_id": image_id,
          "category_id": self._category(sem), "segmentation": rle,
          "area": float(mask_util.area(rle)), "bbox": mask_util.toBbox(rle).tolist(),
          "iscrowd": int(inst == 0)})
    segment_ids = np.asarray(segment_ids).reshape(-1)
    segment_scores = np.asarray(segment_scores).reshape(-1)
    count = len(segment_ids) if num_segments is None else int(num_segments)
    for sid, score in zip(segment_ids[:count].tolist(), segment_scores[:count].tolist()):
      sem, inst = divmod(int(sid), self.label_divisor)
      if sid < 0 or sem not in self.thing_train_ids or inst == 0:
        continue
      binary = pred == sid
      if not binary.any():
        continue
      self.detections.append({"image_id": image_id, "category_id": self._category(sem),
                              "segmentation": _rle(binary), "score": float(score)})

  def result(self) -> Dict:
    """{"ap", "ap50", "ap75"} as fractions (0 when there is nothing to evaluate)."""
    if not self.detections or not any(not a["iscrowd"] for a in self.gt_anns):
      return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    gt = COCO()
    gt.dataset = {"images": self.images, "annotations": self.gt_anns,
                  "categories": [{"id": self._category(t)} for t in self.thing_train_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
      gt.createIndex()
      dt = gt.loadRes([dict(d) for d in self.detections])
      coco_eval = COCOeval(gt, dt, iouType="segm")
      coco_eval.evaluate()
      coco_eval.accumulate()
      coco_eval.summarize()
    stats = [max(float(s), 0.0) for s in coco_eval.stats[:3]]  # -1 means "no data"
    return {"ap": stats[0], "ap50": stats[1], "ap75": stats[2]}
