r"""Panoptic quality (PQ/SQ/RQ) exactly as cocodataset/panopticapi, fast.

Offline (same arguments as panopticapi's pq_compute):

  python -m evaluation.panoptic_quality --gt_json_file=F --pred_json_file=F \
      --gt_folder=D --pred_folder=D [--output_json=F] [--num_workers=N]

Speed: a pool of threads (one per CPU, chunks of a few pairs) reads each PNG once into
a reusable uint32 id buffer (`evaluation/png_decode.py`: zlib-ng inflate and a compiled
numba unfilter kernel, with Pillow as the fallback) and counts all (gt, pred) segment
pairs in one pass over the pixels (`evaluation/pq_files.py`); inflate and both kernels
release the GIL. benchmarks/panoptic_quality.py times it against panopticapi.

Online: `PanopticQualityAccumulator` streams int panoptic maps in the internal encoding
(docs/DESIGN.md) through the same core (`evaluation/pq_core.py`), so both give identical
numbers on the same data.
"""

import concurrent.futures
import json
import os
import sys
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from deeplab2_kmax.core import cli
from evaluation import pq_core
from evaluation.pq_files import PanopticFormatError  # pylint: disable=unused-import
from evaluation.pq_files import Workspace
from evaluation.pq_files import evaluate_pair
from evaluation.pq_files import read_id_png  # pylint: disable=unused-import
from evaluation.pq_files import warm_up


# ------------------------------------------------------------------ offline driver
class _Pairs:
  """Evaluates chunks of pairs; one Workspace per thread (its tables are per image)."""

  def __init__(self, gt_folder, pred_folder, cat_index, pred_json_name, gt_json_name):
    self.args = (gt_folder, pred_folder, cat_index)
    self.json_names = (pred_json_name, gt_json_name)
    self.local = threading.local()

  def __call__(self, pairs: List[Tuple[Dict, Dict]]) -> List[pq_core.PQCounts]:
    workspace = getattr(self.local, "workspace", None)
    if workspace is None:
      workspace = self.local.workspace = Workspace()
    return [evaluate_pair(gt_ann, pred_ann, *self.args, workspace, *self.json_names)
            for gt_ann, pred_ann in pairs]


def _load_json(path: str, what: str) -> Dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise PanopticFormatError(f"{path}: cannot read {what} "
                              f"({getattr(e, 'strerror', None) or e})") from e


def _annotations(obj, path: str, ground_truth: bool) -> List[Dict]:
  """The 'annotations' list, checked to have the fields the evaluation reads."""
  anns = obj.get("annotations") if isinstance(obj, dict) else None
  if not isinstance(anns, list):
    raise PanopticFormatError(f"{path}: no 'annotations' list")
  needed = ("id", "category_id", "area") if ground_truth else ("id", "category_id")
  for ann in anns:
    segs = ann.get("segments_info", []) if isinstance(ann, dict) else None
    if (not isinstance(segs, list) or "image_id" not in ann or "file_name" not in ann
        or not all(isinstance(s, dict) and all(k in s for k in needed) for s in segs)):
      raise PanopticFormatError(f"{path}: malformed annotation {str(ann)[:100]} (needs "
                                f"image_id, file_name, segments_info with {needed})")
  return anns


def pq_compute(gt_json_file: str, pred_json_file: str, gt_folder: Optional[str] = None,
               pred_folder: Optional[str] = None, num_workers: int = 0,
               progress: bool = True) -> Dict:
  """panopticapi's pq_compute: returns {"All", "Things", "Stuff", "per_class"}."""
  gt_json = _load_json(gt_json_file, "ground-truth JSON")
  pred_json = _load_json(pred_json_file, "prediction JSON")
  gt_folder = gt_folder or gt_json_file.replace(".json", "")
  pred_folder = pred_folder or pred_json_file.replace(".json", "")
  for folder, flag in ((gt_folder, "gt_folder"), (pred_folder, "pred_folder")):
    if not os.path.isdir(folder):
      raise PanopticFormatError(f"--{flag}={folder}: folder with the segmentations "
                                "doesn't exist")
  categories = gt_json.get("categories") if isinstance(gt_json, dict) else None
  if not isinstance(categories, list) or not all(isinstance(c, dict) and "id" in c
                                                 for c in categories):
    raise PanopticFormatError(f"{gt_json_file}: no 'categories' list with ids")
  cat_index = {c["id"]: i for i, c in enumerate(categories)}
  gt_annotations = _annotations(gt_json, gt_json_file, ground_truth=True)
  pred_by_image = {a["image_id"]: a
                   for a in _annotations(pred_json, pred_json_file, ground_truth=False)}
  pairs = []
  for gt_ann in gt_annotations:
    if gt_ann["image_id"] not in pred_by_image:
      raise PanopticFormatError(
          f"{pred_json_file}: no prediction for the image with id: {gt_ann['image_id']}")
    pairs.append((gt_ann, pred_by_image[gt_ann["image_id"]]))

  total = pq_core.PQCounts.zeros(len(categories))
  work = _Pairs(gt_folder, pred_folder, cat_index, pred_json_file, gt_json_file)
  num_workers = num_workers or os.cpu_count() or 1
  num_workers = max(1, min(num_workers, len(pairs)))
  # Threads: PNG inflate, the compiled decode and counting kernels and numpy release the
  # GIL, and threads start at once and share the JSON (no pickling, no imports).
  # Small chunks keep every core busy to the end.
  chunk = max(1, min(8, len(pairs) // (4 * num_workers)))
  chunks = [pairs[i:i + chunk] for i in range(0, len(pairs), chunk)]
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=len(pairs), desc="PQ", unit="img", disable=not progress,
             file=sys.stderr)
  warm_up()  # compile or load the kernels once, before any thread starts
  if num_workers == 1 or len(chunks) == 1:
    results = map(work, chunks)
    executor = None
  else:
    executor = concurrent.futures.ThreadPoolExecutor(num_workers)
    results = executor.map(work, chunks)
  try:
    for image_counts in results:  # in image order: sums as panopticapi's loop
      for counts in image_counts:
        total.add_image(counts)
      bar.update(len(image_counts))
  finally:
    if executor is not None:
      executor.shutdown(wait=True, cancel_futures=True)
  bar.close()
  return pq_core.summarize(total, [c["id"] for c in categories],
                           [c.get("isthing", 0) == 1 for c in categories])


# ------------------------------------------------------------------ online accumulator
class PanopticQualityAccumulator:
  """Streams int panoptic maps (internal encoding) through the panopticapi core.

  Categories are the train ids 0..num_classes-1 (reported under `category_ids` if
  given, e.g. DatasetInfo's original ids). gt: ignore_label·D (any instance) is void,
  a thing class with instance 0 is crowd; pred: ignore_label·D is void. Segment areas
  are pixel counts, as in the PNG+JSON files the writers produce.
  """

  def __init__(self, num_classes: int, label_divisor: int, ignore_label: int,
               thing_train_ids: Iterable[int],
               category_ids: Optional[Sequence[int]] = None):
    self.num_classes = int(num_classes)
    self.label_divisor = int(label_divisor)
    self.ignore_label = int(ignore_label)
    self.is_thing = np.zeros(self.num_classes, bool)
    self.is_thing[list(thing_train_ids)] = True
    self.category_ids = (list(category_ids) if category_ids is not None
                         else list(range(self.num_classes)))
    if len(self.category_ids) != self.num_classes:
      raise ValueError("category_ids must have num_classes entries")
    self.reset()

  @classmethod
  def from_dataset_info(cls, info) -> "PanopticQualityAccumulator":
    """Builds from a deeplab2_kmax.core.dataset_info.DatasetInfo."""
    mapping = info.train_id_to_category_id
    mapping = mapping() if callable(mapping) else mapping
    return cls(info.num_classes, info.label_divisor, info.ignore_label,
               info.thing_train_ids, [mapping[t] for t in range(info.num_classes)])

  def reset(self):
    self.counts = pq_core.PQCounts.zeros(self.num_classes)

  def _segments(self, values: np.ndarray, what: str):
    """Sorted segment values of a map (void excluded) and its compact label map."""
    semantic = values // self.label_divisor
    void = semantic == self.ignore_label
    bad = ~void & ((semantic < 0) | (semantic >= self.num_classes))
    if bad.any():
      raise ValueError(f"{what} map has value {int(values[bad][0])}: semantic id outside "
                       f"0..{self.num_classes - 1} and not the ignore label")
    flat = np.where(void, 0, values + 1).reshape(-1)
    present = np.bincount(flat)
    present[0] = 0
    seg_values = np.nonzero(present)[0]
    table = np.zeros(len(present), np.int64)
    table[seg_values] = np.arange(1, len(seg_values) + 1)
    return seg_values - 1, table[flat], present[seg_values]

  def update(self, gt: np.ndarray, pred: np.ndarray):
    """Adds one image [H, W] or a batch [B, H, W] of (gt, prediction) maps."""
    gt = np.asarray(gt).astype(np.int64)
    pred = np.asarray(pred).astype(np.int64)
    if gt.shape != pred.shape:
      raise ValueError(f"gt shape {gt.shape} != prediction shape {pred.shape}")
    if gt.ndim == 3:
      for g, p in zip(gt, pred):
        self.update(g, p)
      return
    gt_vals, gt_lab, gt_area = self._segments(gt, "ground-truth")
    pred_vals, pred_lab, _ = self._segments(pred, "prediction")
    gt_sem = gt_vals // self.label_divisor
    segments = pq_core.ImageSegments(
        gt_category=gt_sem,
        gt_iscrowd=self.is_thing[gt_sem] & (gt_vals % self.label_divisor == 0),
        gt_area=gt_area,
        pred_category=pred_vals // self.label_divisor)
    inter = pq_core.intersection_matrix(gt_lab, pred_lab, len(gt_vals), len(pred_vals))
    self.counts.add_image(pq_core.image_counts(inter, segments, self.num_classes))

  def result(self) -> Dict:
    return pq_core.summarize(self.counts, self.category_ids, self.is_thing.tolist())


# ------------------------------------------------------------------ CLI
def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  start = time.time()
  results = pq_compute(f.gt_json_file, f.pred_json_file, f.gt_folder, f.pred_folder,
                       num_workers=f.num_workers)
  if f.per_class:
    names = {c["id"]: c.get("name", "")
             for c in _load_json(f.gt_json_file, "ground-truth JSON")["categories"]}
    print(pq_core.format_per_class(results, names))
  print(pq_core.format_table(results))
  print(f"Time elapsed: {time.time() - start:0.2f} seconds")
  if f.output_json:
    os.makedirs(os.path.dirname(os.path.abspath(f.output_json)), exist_ok=True)
    with open(f.output_json, "w") as out:
      json.dump(results, out, indent=1)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("gt_json_file", None, "JSON file with ground truth data.")
  flags.DEFINE_string("pred_json_file", None, "JSON file with predictions data.")
  flags.DEFINE_string("gt_folder", None, "Ground-truth PNG folder (default: X for X.json).")
  flags.DEFINE_string("pred_folder", None, "Prediction PNG folder (default: X for X.json).")
  flags.DEFINE_string("output_json", None, "Where to write the results JSON.")
  flags.DEFINE_integer("num_workers", 0, "Worker threads (0: all CPUs).")
  flags.DEFINE_bool("per_class", False, "Also print the per-class table.")
  flags.mark_flags_as_required(["gt_json_file", "pred_json_file"])



def entry():
  """Console-script entry point."""
  _define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
