"""The one evaluation loop: model → mask-wise merge → PQ, mIoU (and instance AP).

`PanopticEvaluation(model, info).run(batches)` runs every eval batch (images padded to
the eval input size, `labels["original_size"]` kept) through the model once, merges each
image at the padded size cropped to its original size (so padding never counts), and
compares it with its ground truth: PQ with the panopticapi-exact accumulator, mIoU from
the merged semantic map, optionally mask AP of the thing classes. `on_image` sees every
image's result (the trainer keeps a few pictures; `evaluation/evaluate.py` writes COCO
panoptic files). Used by the trainer's evaluation and by `evaluation/evaluate.py`.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tqdm

from deeplab2_kmax.core import output_keys
from deeplab2_kmax.post_processing import MaskWiseMerger
from deeplab2_kmax.post_processing import check_merger_stride
from evaluation.instance_ap import InstanceAP
from evaluation.miou import MeanIoU
from evaluation.panoptic_quality import PanopticQualityAccumulator


@dataclasses.dataclass
class ImageResult:
  """One evaluated image (maps at its original size, the internal label encoding)."""
  index: int
  image_id: bytes
  image: np.ndarray          # uint8-range float [h, w, 3]
  groundtruth: np.ndarray    # [h, w]
  panoptic: np.ndarray       # [h, w]
  segment_ids: np.ndarray    # [S]
  segment_scores: np.ndarray  # [S]


class PanopticEvaluation:
  """model + merger + metrics over a finite dataset (see the module docstring).

  Args:
    model: a built KMaXDeepLab.
    info: the dataset's DatasetInfo.
    merger: a MaskWiseMerger (default: gin bindings + info, the model's mask stride).
    instance_ap: also compute mask AP / AP50 of the thing classes.
  """

  def __init__(self, model, info, merger: Optional[MaskWiseMerger] = None,
               instance_ap: bool = False):
    self.model = model
    self.info = info
    self.merger = merger or MaskWiseMerger(
        thing_train_ids=info.thing_train_ids, label_divisor=info.label_divisor,
        ignore_label=info.ignore_label, mask_stride=model.output_stride)
    check_merger_stride(model, self.merger)
    self.instance_ap = instance_ap
    self._predict = tf.function(lambda images: model(images, training=False))
    self._merge = tf.function(self._merge_one, reduce_retracing=True)

  def _merge_one(self, class_logits, mask_logits, padded, original):
    out = self.merger({output_keys.CLASS_LOGITS: class_logits,
                       output_keys.MASK_LOGITS: mask_logits},
                      (padded[0], padded[1]), (original[0], original[1]))
    return {k: v[0] for k, v in out.items()}

  def run(self, batches, max_examples: Optional[int] = None,
          on_image: Optional[Callable[[ImageResult], None]] = None,
          description: str = "evaluate", progress: bool = True) -> dict:
    """One pass over `batches` of (features, labels); returns the metrics dict:
    pq, sq, rq, pq_th, pq_st, miou (fractions), num_images, panoptic_quality (the full
    accumulator result, per class included), semantic (mIoU details), and ap / ap50
    with instance_ap."""
    info = self.info
    pq = PanopticQualityAccumulator.from_dataset_info(info)
    miou = MeanIoU(info.num_classes, info.ignore_label, class_names=info.names)
    ap = (InstanceAP(info.label_divisor, info.ignore_label, info.thing_train_ids,
                     category_ids=info.category_ids) if self.instance_ap else None)
    count = 0
    bar = tqdm.tqdm(desc=description, unit="img", total=max_examples, disable=not progress,
                    dynamic_ncols=True)
    for features, labels in batches:
      images = features["image"]
      outputs = self._predict(images)
      padded = tf.shape(images)[1:3]
      sizes = labels["original_size"].numpy()
      gts = labels["panoptic"].numpy()
      ids = labels["image_id"].numpy() if "image_id" in labels else [b""] * len(sizes)
      for i in range(images.shape[0]):
        if max_examples is not None and count >= max_examples:
          break
        h, w = int(sizes[i][0]), int(sizes[i][1])
        out = self._merge(outputs[output_keys.CLASS_LOGITS][i:i + 1],
                          outputs[output_keys.MASK_LOGITS][i:i + 1], padded,
                          tf.constant([h, w], tf.int32))
        pred, gt = out["panoptic"].numpy(), gts[i, :h, :w]
        num = int(out["num_segments"])
        result = ImageResult(count, ids[i], images[i].numpy()[:h, :w], gt, pred,
                             out["segment_ids"].numpy()[:num],
                             out["segment_scores"].numpy()[:num])
        pq.update(gt, pred)
        miou.update(gt // info.label_divisor, out["semantic"].numpy())
        if ap is not None:
          ap.update(gt, pred, result.segment_ids, result.segment_scores)
        if on_image is not None:
          on_image(result)
        count += 1
        bar.update(1)
      if max_examples is not None and count >= max_examples:
        break
    bar.close()
    if count == 0:
      raise ValueError("the eval dataset has no examples")
    result, semantic = pq.result(), miou.result()
    metrics = {"pq": result["All"]["pq"], "sq": result["All"]["sq"],
               "rq": result["All"]["rq"], "pq_th": result["Things"]["pq"],
               "pq_st": result["Stuff"]["pq"], "miou": semantic["miou"],
               "num_images": count, "panoptic_quality": result, "semantic": semantic}
    if ap is not None:
      metrics.update(ap.result())
    return metrics
