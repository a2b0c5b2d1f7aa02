"""mIoU on hand-computed cases."""

import numpy as np
import pytest

from evaluation.miou import MeanIoU


def test_hand_computed_iou_ignore_and_void_prediction():
  m = MeanIoU(num_classes=3, ignore_label=255)
  m.update(np.array([[0, 0, 1, 255]]), np.array([[0, 1, 1, 0]]))
  # class 0: TP 1, FN 1, FP 0 -> 1/2; class 1: TP 1, FP 1 -> 1/2; class 2 absent.
  r = m.result()
  assert r["per_class"] == {"0": 0.5, "1": 0.5, "2": 0.0}
  assert r["miou"] == 0.5 and r["n"] == 2
  assert r["pixel_accuracy"] == pytest.approx(2 / 3)
  # A void prediction is a miss of the gt class (not a false positive anywhere).
  m.update(np.array([[2, 2]]), np.array([[2, 255]]))
  r = m.result()
  assert r["per_class"]["2"] == 0.5 and r["n"] == 3
  assert r["miou"] == pytest.approx(0.5)


def test_panoptic_input_and_bad_values():
  m = MeanIoU(num_classes=2, ignore_label=255)
  m.update_panoptic(np.array([[1 * 256 + 3, 255 * 256]]), np.array([[1 * 256 + 7, 0]]), 256)
  assert m.result()["per_class"]["1"] == 1.0 and m.result()["n"] == 1
  with pytest.raises(ValueError, match="ground-truth class 5"):
    m.update(np.array([5]), np.array([0]))
  with pytest.raises(ValueError, match="predicted class 9"):
    m.update(np.array([0]), np.array([9]))
