"""Instance AP through pycocotools on hand-built maps."""

import numpy as np
import pytest

from evaluation.instance_ap import InstanceAP

D = 256


def _gt():
  gt = np.full((20, 20), 2 * D, np.int64)  # stuff class 2
  gt[2:8, 2:8] = 0 * D + 1  # thing class 0, instance 1
  gt[10:16, 10:16] = 0 * D + 2
  gt[0:4, 14:20] = 1 * D + 0  # crowd of thing class 1
  gt[18:, :] = 255 * D
  return gt


def test_perfect_and_missing_detections():
  ap = InstanceAP(D, 255, thing_train_ids=[0, 1], category_ids=[5, 6, 9])
  gt = _gt()
  ap.update(gt, gt.copy(), [1, 2, 2 * D], [0.9, 0.8, 0.99])
  assert ap.result() == pytest.approx({"ap": 1.0, "ap50": 1.0, "ap75": 1.0})
  ap.reset()
  pred = gt.copy()
  pred[10:16, 10:16] = 2 * D  # second instance missed
  ap.update(gt, pred, [1], [0.9])
  # precision 1 up to recall 0.5, then nothing: 51 of COCO's 101 recall points.
  assert ap.result()["ap50"] == pytest.approx(51 / 101)


def test_detection_on_crowd_is_ignored_and_false_positive_hurts():
  gt = _gt()
  pred = gt.copy()
  pred[0:4, 14:20] = 1 * D + 3  # a class-1 detection exactly on the class-1 crowd
  ap = InstanceAP(D, 255, thing_train_ids=[0, 1])
  ap.update(gt, pred, [1 * D + 3, 1, 2], [0.99, 0.9, 0.8])
  assert ap.result()["ap50"] == pytest.approx(1.0)
  pred[0:4, 14:20] = 0 * D + 3  # now class 0: a top-scored false positive
  ap.reset()
  ap.update(gt, pred, [3, 1, 2], [0.99, 0.9, 0.8])
  assert ap.result()["ap50"] < 0.9


def test_no_detections_gives_zero():
  ap = InstanceAP(D, 255, thing_train_ids=[0, 1])
  ap.update(_gt(), np.full((20, 20), 255 * D), [], [])
  assert ap.result() == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
