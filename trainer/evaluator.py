"""Evaluation during/after training: model -> mask-wise merging -> PQ (+ mIoU).

Each eval batch (padded to the eval size, `labels["original_size"]` kept) runs through
the model once; every image is then merged at the padded size and cropped to its
original size before merging (so padding never counts), and compared with its ground
truth by the panopticapi-exact online accumulator. Results go to TensorBoard
(`<model_dir>/eval`) and `<model_dir>/eval/metrics.json` with keys pq, sq, rq, pq_th,
pq_st, miou, step (fractions), plus per-class values.
"""

import json
import os
import time
from typing import Optional, Sequence

from absl import logging
import gin
import numpy as np
import tensorflow as tf
import tqdm

from deeplab2_kmax.inference import check_merger_stride
from deeplab2_kmax.post_processing import MaskWiseMerger
from evaluation.panoptic_quality import PanopticQualityAccumulator
from trainer import summaries


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_label: int):
  """([C, C] counts of (gt class, predicted class), [C] gt pixels predicted void).

  Only gt pixels that are not void count; a predicted void (any label >= C) is a miss
  (a false negative) of the gt class.
  """
  gt = gt.reshape(-1).astype(np.int64)
  pred = pred.reshape(-1).astype(np.int64)
  keep = gt != ignore_label
  gt, pred = gt[keep], pred[keep]
  hit = pred < num_classes
  cm = np.bincount(gt[hit] * num_classes + pred[hit], minlength=num_classes ** 2)
  cm = cm.reshape(num_classes, num_classes)
  missed = np.bincount(gt[~hit], minlength=num_classes)
  return cm, missed


def mean_iou(cm: np.ndarray, missed: np.ndarray) -> float:
  """Mean over classes present in gt or prediction of TP / (TP + FP + FN)."""
  tp = np.diag(cm).astype(np.float64)
  fn = cm.sum(1) - tp + missed
  fp = cm.sum(0) - tp
  denom = tp + fp + fn
  present = denom > 0
  return float(np.mean(tp[present] / denom[present])) if present.any() else 0.0


@gin.configurable(denylist=["model", "dataset_info", "model_dir"])
class Evaluator:
  """Evaluates `model` on a finite eval dataset (DESIGN.md labels).

  Args:
    model: the KMaXDeepLab (built).
    dataset_info: DatasetInfo of the dataset.
    model_dir: metrics.json and summaries go to `model_dir/eval`.
    num_summary_images: predictions drawn into TensorBoard per evaluation.
    max_examples: stop after this many images (None: the whole split).
    merger: a MaskWiseMerger (default: built from gin bindings + dataset_info, with
      mask_stride=model.output_stride).
    write_files: False on non-chief workers.
  """

  def __init__(self, model, dataset_info, model_dir: str, num_summary_images: int = 3,
               max_examples: Optional[int] = None, merger=None,
               write_files: bool = True):
    self.model = model
    self.info = dataset_info
    self.eval_dir = os.path.join(model_dir, "eval")
    self.num_summary_images = num_summary_images
    self.max_examples = max_examples
    self.merger = merger or MaskWiseMerger(
        thing_train_ids=dataset_info.thing_train_ids,
        label_divisor=dataset_info.label_divisor,
        ignore_label=dataset_info.ignore_label, mask_stride=model.output_stride)
    check_merger_stride(model, self.merger)
    self.write_files = write_files
    self._writer = summaries.Writer(self.eval_dir, enabled=write_files)
    self._predict = tf.function(lambda images: self.model(images, training=False))
    self._merge = tf.function(self._merge_one, reduce_retracing=True)

  def _merge_one(self, class_logits, mask_logits, output_size, original_size):
    merged = self.merger({"class_logits": class_logits, "mask_logits": mask_logits},
                         output_size=(output_size[0], output_size[1]),
                         original_size=(original_size[0], original_size[1]))
    return merged["panoptic"][0], merged["semantic"][0]

  def evaluate(self, dataset: tf.data.Dataset, step: int) -> dict:
    """One pass over `dataset`; returns (and writes) the metrics dict."""
    info = self.info
    pq = PanopticQualityAccumulator.from_dataset_info(info)
    cm = np.zeros((info.num_classes, info.num_classes), np.int64)
    missed = np.zeros(info.num_classes, np.int64)
    pictures = []
    count, start = 0, time.time()
    bar = tqdm.tqdm(desc=f"eval @ step {step}", unit="img", total=self.max_examples,
                    disable=not self.write_files, dynamic_ncols=True)
    for features, labels in dataset:
      images = features["image"]
      outputs = self._predict(images)
      padded = tf.shape(images)[1:3]
      sizes = labels["original_size"].numpy()
      gt_all = labels["panoptic"].numpy()
      for i in range(images.shape[0]):
        if self.max_examples is not None and count >= self.max_examples:
          break
        h, w = int(sizes[i][0]), int(sizes[i][1])
        pred, pred_sem = self._merge(outputs["class_logits"][i:i + 1],
                                     outputs["mask_logits"][i:i + 1], padded,
                                     tf.constant([h, w], tf.int32))
        pred = pred.numpy()
        gt = gt_all[i, :h, :w]
        pq.update(gt, pred)
        c, m = confusion_matrix(gt // info.label_divisor, pred_sem.numpy(),
                                info.num_classes, info.ignore_label)
        cm += c
        missed += m
        if len(pictures) < self.num_summary_images:
          pictures.append(self._picture(images[i].numpy()[:h, :w], gt, pred))
        count += 1
        bar.update(1)
      if self.max_examples is not None and count >= self.max_examples:
        break
    bar.close()
    if count == 0:
      raise ValueError("the eval dataset is empty (check --eval_tfrecord)")
    result = pq.result()
    metrics = {"pq": result["All"]["pq"], "sq": result["All"]["sq"],
               "rq": result["All"]["rq"], "pq_th": result["Things"]["pq"],
               "pq_st": result["Stuff"]["pq"], "miou": mean_iou(cm, missed),
               "step": int(step), "num_images": count,
               "per_class": self._per_class(result)}
    logging.info("eval @ step %d on %d images (%.1f s): PQ %.4f SQ %.4f RQ %.4f "
                 "PQ_th %.4f PQ_st %.4f mIoU %.4f", step, count, time.time() - start,
                 metrics["pq"], metrics["sq"], metrics["rq"], metrics["pq_th"],
                 metrics["pq_st"], metrics["miou"])
    self._write(metrics, pictures)
    return metrics

  def _per_class(self, result) -> dict:
    names = {str(c.id): c.name for c in self.info.categories}
    return {names.get(k, k): v for k, v in result["per_class"].items()}

  def _picture(self, image, gt, pred) -> np.ndarray:
    """image | ground truth | prediction, side by side."""
    info = self.info
    draw = lambda p: summaries.colorize_panoptic(p, info.colors, info.label_divisor,
                                                 info.ignore_label, image=image)
    return np.concatenate([image.astype(np.uint8), draw(gt), draw(pred)], axis=1)

  def _write(self, metrics: dict, pictures: Sequence[np.ndarray]) -> None:
    if not self.write_files:
      return
    scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
    self._writer.scalars(scalars, metrics["step"], prefix="metrics/")
    if pictures:
      height = max(p.shape[0] for p in pictures)
      width = max(p.shape[1] for p in pictures)
      batch = np.zeros((len(pictures), height, width, 3), np.uint8)
      for i, p in enumerate(pictures):
        batch[i, :p.shape[0], :p.shape[1]] = p
      self._writer.images("predictions/image_gt_prediction", batch, metrics["step"],
                          max_outputs=len(pictures))
    os.makedirs(self.eval_dir, exist_ok=True)
    path = os.path.join(self.eval_dir, "metrics.json")
    with open(path + ".tmp", "w") as f:
      json.dump(metrics, f, indent=2)
    os.replace(path + ".tmp", path)
    with open(os.path.join(self.eval_dir, "history.jsonl"), "a") as f:
      f.write(json.dumps({k: v for k, v in metrics.items() if k != "per_class"}) + "\n")
