"""Panoptic-quality core with exactly the semantics of cocodataset/panopticapi.

One image is described by two label maps of compact segment indices plus per-segment
tables (see `ImageSegments`). All matching is vectorized over the small
(num_gt + 2) x (num_pred + 1) intersection matrix obtained with one `np.bincount` over
paired pixel labels. Rules (docs/PAPER.md §6):

* gt index 0 is VOID (PNG id 0); predicted index 0 is VOID (ignored prediction pixels);
* the last gt index (``num_gt + 1``) collects gt ids present in the PNG but not listed in
  the JSON: panopticapi skips those pixels for matching and does NOT count them as void;
* union = |pred| + |gt| - |inter| - |pred ∩ void|, with |gt| the gt JSON area (panopticapi
  uses the JSON area of gt segments) and |pred| the PNG pixel count;
* a match needs the same category, a non-crowd gt and IoU > 0.5 (strict);
* FN: unmatched non-crowd gt; crowd segments are never matched nor FN and only the last
  listed crowd segment of a category is used to ignore FPs;
* FP: unmatched predictions unless (|pred ∩ void| + |pred ∩ crowd of its category|) /
  |pred| > 0.5.

Categories are addressed by a compact index ``0..K-1`` (the evaluated categories) plus one
extra bucket ``K`` for gt categories outside the evaluated list (panopticapi accumulates
those but never averages them).
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np


@dataclasses.dataclass
class ImageSegments:
  """Per-segment tables of one image (index i describes segment label i + 1)."""
  gt_category: np.ndarray  # int [G] compact category index (K for unknown categories)
  gt_iscrowd: np.ndarray  # bool [G]
  gt_area: np.ndarray  # int64 [G] area used in the union (JSON area offline)
  pred_category: np.ndarray  # int [P] compact category index (must be < K)


@dataclasses.dataclass
class PQCounts:
  """Per-category accumulators (arrays of length K + 1, last = unknown categories).

  `image_counts` also keeps its matches (category, IoU) in panopticapi's order (gt id,
  then pred id): `add_image` adds those one by one to the running IoU sums, so a total
  built image after image has the very same float rounding as panopticapi's loop.
  """
  tp: np.ndarray
  fp: np.ndarray
  fn: np.ndarray
  iou: np.ndarray
  match_categories: Optional[np.ndarray] = None
  match_ious: Optional[np.ndarray] = None

  @classmethod
  def zeros(cls, num_categories: int) -> "PQCounts":
    n = num_categories + 1
    return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
               np.zeros(n, np.float64))

  def __iadd__(self, other: "PQCounts") -> "PQCounts":
    self.tp += other.tp
    self.fp += other.fp
    self.fn += other.fn
    self.iou += other.iou
    return self

  def add_image(self, image: "PQCounts") -> "PQCounts":
    """Adds one image's counts, its IoUs one at a time in panopticapi's order."""
    self.tp += image.tp
    self.fp += image.fp
    self.fn += image.fn
    if image.match_categories is None:
      self.iou += image.iou
    else:  # np.add.at is unbuffered: sequential sums, like `iou += x` per match
      np.add.at(self.iou, image.match_categories, image.match_ious)
    return self


def intersection_matrix(gt_labels: np.ndarray, pred_labels: np.ndarray, num_gt: int,
                        num_pred: int) -> np.ndarray:
  """Counts pixels per (gt label, pred label) pair: int64 [num_gt + 2, num_pred + 1].

  gt labels are 0 (void), 1..num_gt (listed segments), num_gt + 1 (unlisted ids);
  pred labels are 0 (void) or 1..num_pred.
  """
  cols = num_pred + 1
  keys = gt_labels.reshape(-1).astype(np.intp)  # bincount's native index type
  keys *= cols
  keys += pred_labels.reshape(-1)
  counts = np.bincount(keys, minlength=(num_gt + 2) * cols)
  return counts.reshape(num_gt + 2, cols)


def image_counts(inter: np.ndarray, segments: ImageSegments, num_categories: int,
                 pred_area: Optional[np.ndarray] = None,
                 gt_ids: Optional[Sequence[int]] = None) -> PQCounts:
  """PQ counts of one image from its intersection matrix (see `intersection_matrix`).

  gt_ids: the PNG ids of the gt segments when their rows are not in increasing id order
  (the order in which panopticapi adds the IoUs of the matches).
  """
  num_gt = len(segments.gt_category)
  num_pred = len(segments.pred_category)
  counts = PQCounts.zeros(num_categories)
  k1 = num_categories + 1
  if pred_area is None:
    pred_area = inter.sum(axis=0)[1:]
  pred_area = pred_area.astype(np.int64)
  gt_cat = segments.gt_category.astype(np.int64)
  pred_cat = segments.pred_category.astype(np.int64)
  crowd = segments.gt_iscrowd.astype(bool)
  void_inter = inter[0, 1:]  # [P]
  pair = inter[1:num_gt + 1, 1:]  # [G, P]

  gt_matched = np.zeros(num_gt, bool)
  pred_matched = np.zeros(num_pred, bool)
  if num_gt and num_pred:
    same = (gt_cat[:, None] == pred_cat[None, :]) & ~crowd[:, None] & (pair > 0)
    union = (pred_area[None, :] + segments.gt_area.astype(np.int64)[:, None] - pair
             - void_inter[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
      iou = pair / union
    match = same & (iou > 0.5)
    gi, pi = np.nonzero(match)
    gt_matched[gi] = True
    pred_matched[pi] = True
    if gt_ids is not None:  # a gt segment has at most one match: sort by gt id
      order = np.argsort(np.asarray(gt_ids, np.int64)[gi], kind="stable")
      gi, pi = gi[order], pi[order]
    cats = gt_cat[gi]
    counts.tp += np.bincount(cats, minlength=k1)
    counts.match_categories = cats
    counts.match_ious = iou[gi, pi]
    np.add.at(counts.iou, cats, counts.match_ious)

  fn_mask = ~gt_matched & ~crowd
  counts.fn += np.bincount(gt_cat[fn_mask], minlength=k1)

  if num_pred:
    # Last listed crowd segment of each category (panopticapi's dict overwrite).
    crowd_of_cat = np.full(k1, -1, np.int64)
    crowd_idx = np.nonzero(crowd & ~gt_matched)[0]
    crowd_of_cat[gt_cat[crowd_idx]] = crowd_idx  # later indices overwrite earlier ones
    pred_crowd = crowd_of_cat[pred_cat]
    has_crowd = pred_crowd >= 0
    crowd_inter = np.zeros(num_pred, np.int64)
    if num_gt:
      rows = np.where(has_crowd, pred_crowd, 0)
      crowd_inter = np.where(has_crowd, pair[rows, np.arange(num_pred)], 0)
    ignored_inter = void_inter + crowd_inter
    with np.errstate(divide="ignore", invalid="ignore"):
      ignored = ignored_inter / pred_area > 0.5
    fp_mask = ~pred_matched & ~ignored
    counts.fp += np.bincount(pred_cat[fp_mask], minlength=k1)
  return counts


def summarize(counts: PQCounts, category_ids: Sequence[int],
              isthing: Sequence[bool]) -> Dict:
  """All / Things / Stuff averages and per-class values, as fractions.

  Averages run over the categories with TP + FP + FN > 0; an empty split gives zeros
  with n = 0 (panopticapi would divide by zero).
  """
  k = len(category_ids)
  tp, fp, fn, iou = (counts.tp[:k].astype(np.float64), counts.fp[:k].astype(np.float64),
                     counts.fn[:k].astype(np.float64), counts.iou[:k])
  present = (counts.tp[:k] + counts.fp[:k] + counts.fn[:k]) > 0
  denom = tp + 0.5 * fp + 0.5 * fn
  with np.errstate(divide="ignore", invalid="ignore"):
    pq = np.where(present, iou / denom, 0.0)
    sq = np.where(counts.tp[:k] > 0, iou / tp, 0.0)
    rq = np.where(present, tp / denom, 0.0)
  isthing = np.asarray(isthing, bool)
  results = {}
  for name, sel in (("All", np.ones(k, bool)), ("Things", isthing), ("Stuff", ~isthing)):
    use = sel & present
    n = int(use.sum())
    if n == 0:
      results[name] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
      continue
    # Python-order summation over categories like panopticapi.
    results[name] = {
        "pq": float(sum(pq[use].tolist())) / n,
        "sq": float(sum(sq[use].tolist())) / n,
        "rq": float(sum(rq[use].tolist())) / n,
        "n": n,
    }
  results["per_class"] = {
      str(int(cid)): {"pq": float(pq[i]), "sq": float(sq[i]), "rq": float(rq[i])}
      for i, cid in enumerate(category_ids)
  }
  return results


def format_table(results: Dict) -> str:
  """The summary table panopticapi prints (percentages)."""
  lines = ["{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N"),
           "-" * (10 + 7 * 4)]
  for name in ("All", "Things", "Stuff"):
    r = results[name]
    lines.append("{:10s}| {:5.1f}  {:5.1f}  {:5.1f} {:5d}".format(
        name, 100 * r["pq"], 100 * r["sq"], 100 * r["rq"], r["n"]))
  return "\n".join(lines)


def format_per_class(results: Dict, names: Optional[Dict[int, str]] = None) -> str:
  """Per-class PQ/SQ/RQ table (percentages)."""
  lines = ["{:>6s} {:24s}| {:>5s}  {:>5s}  {:>5s}".format("id", "name", "PQ", "SQ", "RQ")]
  for cid, r in results["per_class"].items():
    name = (names or {}).get(int(cid), "")
    lines.append("{:>6s} {:24s}| {:5.1f}  {:5.1f}  {:5.1f}".format(
        cid, name[:24], 100 * r["pq"], 100 * r["sq"], 100 * r["rq"]))
  return "\n".join(lines)


def merge_counts(parts: List[PQCounts], num_categories: int) -> PQCounts:
  total = PQCounts.zeros(num_categories)
  for part in parts:
    total += part
  return total
