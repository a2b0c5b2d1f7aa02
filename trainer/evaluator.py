"""Evaluation during/after training: the one evaluation loop (app.evaluation) plus the
trainer's outputs. Results go to TensorBoard
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

from deeplab2_kmax.app import evaluation
from deeplab2_kmax.app import visualization
from trainer import summaries


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
    self.evaluation = evaluation.PanopticEvaluation(model, dataset_info, merger=merger)
    self.write_files = write_files
    self._writer = summaries.Writer(self.eval_dir, enabled=write_files)

  def evaluate(self, dataset, step: int) -> dict:
    """One pass over `dataset`; returns (and writes) the metrics dict."""
    pictures = []

    def keep_picture(image: evaluation.ImageResult):
      if len(pictures) < self.num_summary_images:
        pictures.append(self._picture(image.image, image.groundtruth, image.panoptic))

    start = time.time()
    full = self.evaluation.run(dataset, self.max_examples, on_image=keep_picture,
                               description=f"eval @ step {step}",
                               progress=self.write_files)
    metrics = {k: full[k] for k in ("pq", "sq", "rq", "pq_th", "pq_st", "miou",
                                    "num_images")}
    metrics.update(step=int(step), per_class=self._per_class(full["panoptic_quality"]))
    logging.info("eval @ step %d on %d images (%.1f s): PQ %.4f SQ %.4f RQ %.4f "
                 "PQ_th %.4f PQ_st %.4f mIoU %.4f", step, metrics["num_images"],
                 time.time() - start, metrics["pq"], metrics["sq"], metrics["rq"],
                 metrics["pq_th"], metrics["pq_st"], metrics["miou"])
    self._write(metrics, pictures)
    return metrics

  def _per_class(self, result) -> dict:
    names = {str(c.id): c.name for c in self.info.categories}
    return {names.get(k, k): v for k, v in result["per_class"].items()}

  def _picture(self, image, gt, pred) -> np.ndarray:
    """image | ground truth | prediction (drawn over the image), side by side."""
    info = self.info
    names, colors = dict(enumerate(info.names)), dict(enumerate(info.colors))
    draw = lambda p: visualization.overlay_panoptic(
        np.asarray(image, np.uint8), p, info.label_divisor, info.ignore_label, names,
        colors)
    return np.concatenate([np.asarray(image, np.uint8), draw(gt), draw(pred)], axis=1)

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
