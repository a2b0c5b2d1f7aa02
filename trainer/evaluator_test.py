"""Evaluator tests: mIoU counts by hand, perfect predictions give PQ = mIoU = 1,
metrics.json keys, panoptic drawing."""
import json

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.core.dataset_info import Category, DatasetInfo
from deeplab2_kmax.post_processing import MaskWiseMerger
from trainer import evaluator as evaluator_lib
from trainer import summaries

D = 256


def _info():
  cats = [Category(id=2, train_id=0, name="disk", isthing=1, color=(200, 0, 0)),
          Category(id=5, train_id=1, name="square", isthing=1, color=(0, 200, 0)),
          Category(id=17, train_id=2, name="sky", isthing=0, color=(0, 0, 200))]
  return DatasetInfo(name="toy", label_divisor=D, ignore_label=255, categories=cats)


def _perfect_case():
  """17x17 image: sky (stuff) left, disk instance 1 right; pixel column 10 is void in the
  gt (where the two upsampled masks tie). Mask logits on the stride-4 5x5 grid."""
  n = 4
  mask = np.full((1, 5, 5, n), -20.0, np.float32)
  mask[0, :, :3, 0] = 10.0
  mask[0, :, 3:, 0] = -10.0
  mask[0, :, :3, 1] = -10.0
  mask[0, :, 3:, 1] = 10.0
  cls = np.full((1, n, 4), -10.0, np.float32)
  cls[0, :, 3] = 10.0            # void for the unused masks
  cls[0, 0] = [-10, -10, 10, -10]  # mask 0: sky
  cls[0, 1] = [10, -10, -10, -10]  # mask 1: disk
  gt = np.zeros((1, 17, 17), np.int32)
  gt[0, :, :10] = 2 * D
  gt[0, :, 10] = 255 * D
  gt[0, :, 11:] = 0 * D + 1
  outputs = {"class_logits": tf.constant(cls), "mask_logits": tf.constant(mask)}
  dataset = tf.data.Dataset.from_tensors(
      ({"image": tf.zeros([1, 17, 17, 3])},
       {"panoptic": tf.constant(gt), "original_size": tf.constant([[17, 17]])}))
  return (lambda images, training=False: outputs), dataset


def test_perfect_prediction_scores_one_and_writes_metrics(tmp_path):
  info = _info()
  model, dataset = _perfect_case()
  merger = MaskWiseMerger(info.thing_train_ids, D, 255, thing_area_limit=4,
                          stuff_area_limit=4)
  evaluator = evaluator_lib.Evaluator(model, info, str(tmp_path), merger=merger)
  metrics = evaluator.evaluate(dataset, step=7)
  for key in ("pq", "sq", "rq", "pq_th", "pq_st", "miou"):
    assert metrics[key] == pytest.approx(1.0), key
  written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert {"pq", "sq", "rq", "pq_th", "pq_st", "miou", "step"} <= set(written)
  assert written["step"] == 7 and written["per_class"]["sky"]["pq"] == pytest.approx(1.0)
  assert (tmp_path / "eval" / "history.jsonl").read_text().count("\n") == 1


def test_wrong_class_scores_zero(tmp_path):
  info = _info()
  model, dataset = _perfect_case()
  outputs = model(None)
  cls = outputs["class_logits"].numpy()
  cls[0, 1] = [-10, 10, -10, -10]  # the disk predicted as a square
  wrong = dict(outputs, class_logits=tf.constant(cls))
  merger = MaskWiseMerger(info.thing_train_ids, D, 255, thing_area_limit=4,
                          stuff_area_limit=4)
  evaluator = evaluator_lib.Evaluator(lambda images, training=False: wrong, info,
                                      str(tmp_path), merger=merger)
  metrics = evaluator.evaluate(dataset, step=1)
  # sky: TP (PQ 1); disk: FN; square: FP -> PQ = (1 + 0 + 0) / 3, things 0, stuff 1.
  assert metrics["pq"] == pytest.approx(1 / 3)
  assert metrics["pq_th"] == 0.0 and metrics["pq_st"] == pytest.approx(1.0)


class _Stride2Model:
  """The perfect case on a stride-2 grid (9x9 for the 17x17 image), as the five-stage
  Cityscapes models output; tie (void in the gt) at pixel column 9."""
  output_stride = 2

  def __init__(self):
    mask = np.full((1, 9, 9, 4), -20.0, np.float32)
    mask[0, :, :5, 0], mask[0, :, 5:, 0] = 10.0, -10.0
    mask[0, :, :5, 1], mask[0, :, 5:, 1] = -10.0, 10.0
    cls = np.full((1, 4, 4), -10.0, np.float32)
    cls[0, :, 3] = 10.0
    cls[0, 0] = [-10, -10, 10, -10]
    cls[0, 1] = [10, -10, -10, -10]
    self.outputs = {"class_logits": tf.constant(cls), "mask_logits": tf.constant(mask)}

  def __call__(self, images, training=False):
    return self.outputs


def test_default_merger_takes_the_model_output_stride(tmp_path):
  import gin
  info = _info()
  gt = np.zeros((1, 17, 17), np.int32)
  gt[0, :, :9] = 2 * D
  gt[0, :, 9] = 255 * D
  gt[0, :, 10:] = 0 * D + 1
  dataset = tf.data.Dataset.from_tensors(
      ({"image": tf.zeros([1, 17, 17, 3])},
       {"panoptic": tf.constant(gt), "original_size": tf.constant([[17, 17]])}))
  try:
    gin.parse_config("MaskWiseMerger.thing_area_limit = 4\n"
                     "MaskWiseMerger.stuff_area_limit = 4")
    evaluator = evaluator_lib.Evaluator(_Stride2Model(), info, str(tmp_path))
  finally:
    gin.clear_config()
  assert evaluator.evaluation.merger.mask_stride == 2
  metrics = evaluator.evaluate(dataset, step=1)
  assert metrics["pq"] == pytest.approx(1.0) and metrics["miou"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="mask_stride=4 differs"):
    evaluator_lib.Evaluator(_Stride2Model(), info, str(tmp_path),
                            merger=MaskWiseMerger(info.thing_train_ids, D, 255))
