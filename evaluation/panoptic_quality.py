r"""Panoptic quality (PQ/SQ/RQ) exactly as cocodataset/panopticapi, fast.

Offline (same arguments as panopticapi's pq_compute):

  python -m evaluation.panoptic_quality --gt_json_file=F --pred_json_file=F \
      --gt_folder=D --pred_folder=D [--output_json=F] [--num_workers=N]

Speed: worker processes (fork, chunks of a few pairs, only JSON dicts pickled) decode
each PNG with PIL straight into a reusable uint32 buffer and count all (gt, pred)
segment pairs with one `np.bincount`. PNG decoding (zlib inflate) is ~75% of the CPU
time and bounds the speed: see benchmarks/panoptic_quality.py, which reports it.

Online: `PanopticQualityAccumulator` streams int panoptic maps in the internal encoding
(docs/DESIGN.md) through the same core (`evaluation/pq_core.py`), so both give identical
numbers on the same data.
"""

import json
import multiprocessing
import os
import sys
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from evaluation import pq_core

_ID_SPACE = 1 << 24  # RGB-encoded ids: R + 256 G + 256^2 B.


class PanopticFormatError(ValueError):
  """Invalid prediction/ground-truth files (message names the file and segment)."""


# --------------------------------------------------------------------------- PNG ids
def _decode_rgb_into(img, out: Optional[np.ndarray]) -> Optional[np.ndarray]:
  """Decodes an 8-bit RGB PNG straight into a uint32 buffer, or returns None.

  PIL's decoder unpacks the RGB rows into 4-byte RGBX pixels of an image that shares
  memory with `out` (no decode-then-convert, no tobytes copy, no fresh pages); the
  little-endian uint32 value is then id + (255 << 24).
  """
  if not (img.mode == "RGB" and hasattr(img, "_mode") and len(img.tile) == 1
          and img.tile[0][3] in ("RGB", ("RGB",))):
    return None
  width, height = img.size
  if (out is None or out.shape != (height, width) or out.dtype != np.uint32
      or not out.flags.writeable or not out.flags.c_contiguous):
    out = np.empty((height, width), np.uint32)
  try:
    target = Image.frombuffer("RGBX", img.size, out, "raw", "RGBX", 0, 1)
    img._mode = "RGBX"  # pylint: disable=protected-access
    img.im = target.im
    img.load()
  except (AttributeError, TypeError):
    return None
  if img.im is not target.im:  # PIL decoded elsewhere: take the ordinary path
    return None
  np.bitwise_and(out, np.uint32(0xFFFFFF), out=out)
  return out


def read_id_png(path: str, out: Optional[np.ndarray] = None) -> np.ndarray:
  """Reads a COCO-panoptic PNG into uint32 segment ids (R + 256 G + 256^2 B).

  `out`: an optional reusable [H, W] uint32 buffer (used when the size matches).
  """
  try:
    img = Image.open(path)
    ids = _decode_rgb_into(img, out)
    if ids is not None:
      return ids
    img = Image.open(path)
    img.load()
  except (OSError, ValueError, SyntaxError) as e:
    raise PanopticFormatError(f"cannot read panoptic PNG {path}: {e}") from e
  if img.mode == "RGB":
    img = img.convert("RGBX")
  if img.mode in ("RGBX", "RGBA"):
    return np.asarray(img).view(np.uint32)[..., 0] & np.uint32(0xFFFFFF)
  arr = np.asarray(img)
  if arr.ndim != 2:
    raise PanopticFormatError(f"{path}: unsupported PNG mode {img.mode}")
  if arr.size and (arr.min() < 0 or arr.max() >= _ID_SPACE):
    raise PanopticFormatError(f"{path}: pixel values outside the id range 0..{_ID_SPACE - 1}")
  return arr.astype(np.uint32)


class _Workspace:
  """Per-process workspace, reused for every image pair (no fresh pages per image).

  Two 2^24-entry int64 lookup tables map a PNG segment id straight to its share of the
  pair key ``row * num_cols + col`` (gt: row, pred: col) so that one `np.bincount` over
  ``rows[gt] + cols[pred]`` gives the whole intersection matrix. Index 0 of both axes
  is "id not listed in the JSON" because that is what the zero-filled tables hold (so
  only the few listed ids are written and reset per image; np.zeros pages are lazy);
  index 1 is void (PNG id 0), 2.. the listed segments in JSON order.
  """

  def __init__(self):
    self.rows = np.zeros(_ID_SPACE, np.int64)
    self.cols = np.zeros(_ID_SPACE, np.int64)
    self.buffers = {}

  def buffer(self, name: str, shape, dtype) -> np.ndarray:
    buf = self.buffers.get(name)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
      buf = self.buffers[name] = np.empty(shape, dtype)
    return buf

  def read(self, path: str, name: str) -> np.ndarray:
    """Decodes a PNG into reusable buffers: segment ids as intp (the index type)."""
    ids = read_id_png(path, self.buffers.get(name + "_u32"))
    self.buffers[name + "_u32"] = ids
    out = self.buffer(name + "_idx", ids.shape, np.intp)
    np.copyto(out, ids, casting="safe")
    return out

  def pair_counts(self, gt_idx: np.ndarray, pred_idx: np.ndarray, gt_keys: Sequence[int],
                  pred_keys: Sequence[int]) -> np.ndarray:
    """Pixel counts [num_gt + 2, num_pred + 2] over (row, col) as described above."""
    num_cols = len(pred_keys) + 2
    gt_keys = np.asarray(gt_keys, np.intp)
    pred_keys = np.asarray(pred_keys, np.intp)
    self.rows[0] = num_cols
    self.rows[gt_keys] = np.arange(2, len(gt_keys) + 2) * num_cols
    self.cols[0] = 1
    self.cols[pred_keys] = np.arange(2, len(pred_keys) + 2)
    try:
      # mode="clip": ids are < 2^24 by construction, and clip skips numpy's slow
      # bounds-checking path (4x faster than the default mode="raise").
      keys = np.take(self.rows, gt_idx, mode="clip",
                     out=self.buffer("keys", gt_idx.shape, np.intp))
      keys += np.take(self.cols, pred_idx, mode="clip",
                      out=self.buffer("keys2", pred_idx.shape, np.intp))
    finally:
      self.rows[gt_keys] = 0
      self.rows[0] = 0
      self.cols[pred_keys] = 0
      self.cols[0] = 0
    counts = np.bincount(keys.reshape(-1), minlength=(len(gt_keys) + 2) * num_cols)
    return counts.reshape(len(gt_keys) + 2, num_cols)


# ------------------------------------------------------------------ one image pair
def _segments_by_id(ann: Dict, json_name: str) -> Dict[int, Dict]:
  segs = {}
  for seg in ann.get("segments_info", []):
    sid = int(seg["id"])
    if not 0 < sid < _ID_SPACE:
      raise PanopticFormatError(
          f"{json_name}: image {ann.get('image_id')} segment id {sid} is out of range "
          f"(1..{_ID_SPACE - 1}; 0 is void)")
    segs[sid] = seg  # later entries overwrite earlier ones, as in panopticapi
  return segs


def evaluate_pair(gt_ann: Dict, pred_ann: Dict, gt_folder: str, pred_folder: str,
                  cat_index: Dict[int, int], workspace: "_Workspace",
                  pred_json_name: str = "pred_json") -> pq_core.PQCounts:
  """PQ counts of one (gt, prediction) PNG pair, with panopticapi's sanity checks."""
  num_cats = len(cat_index)
  image_id = gt_ann["image_id"]
  gt_path = os.path.join(gt_folder, gt_ann["file_name"])
  pred_path = os.path.join(pred_folder, pred_ann["file_name"])
  gt_idx = workspace.read(gt_path, "gt")
  pred_idx = workspace.read(pred_path, "pred")
  if gt_idx.shape != pred_idx.shape:
    raise PanopticFormatError(
        f"{pred_path}: size {pred_idx.shape} differs from ground truth {gt_path} "
        f"{gt_idx.shape} (image {image_id})")
  gt_segs = _segments_by_id(gt_ann, "gt_json")
  pred_segs = _segments_by_id(pred_ann, pred_json_name)
  gt_keys = list(gt_segs)
  pred_keys = list(pred_segs)

  counts = workspace.pair_counts(gt_idx, pred_idx, gt_keys, pred_keys)
  if counts[:, 0].any():  # prediction ids missing from the JSON
    listed = np.isin(pred_idx, np.asarray([0] + pred_keys, np.intp))
    bad = np.unique(pred_idx[~listed])
    raise PanopticFormatError(
        f"{pred_path}: in the image with ID {image_id} segment with ID {int(bad[0])} is "
        f"presented in PNG and not presented in JSON {pred_json_name}"
        + (f" (also {bad[1:6].tolist()})" if len(bad) > 1 else ""))
  # pq_core's layout: rows void, listed gt, unlisted gt ids (skipped); cols void, listed.
  num_gt = len(gt_keys)
  inter = counts[np.r_[1, 2:num_gt + 2, 0], 1:]
  pred_area = inter.sum(axis=0)[1:]
  missing = [pred_keys[i] for i in np.nonzero(pred_area == 0)[0]]
  if missing:
    raise PanopticFormatError(
        f"{pred_json_name}: in the image with ID {image_id} the following segment IDs "
        f"{missing} are presented in JSON and not presented in PNG {pred_path}")
  pred_cat = np.empty(len(pred_keys), np.int64)
  for i, sid in enumerate(pred_keys):
    cid = pred_segs[sid].get("category_id")
    if cid not in cat_index:
      raise PanopticFormatError(
          f"{pred_json_name}: in the image with ID {image_id} segment with ID {sid} has "
          f"unknown category_id {cid}")
    pred_cat[i] = cat_index[cid]
  segments = pq_core.ImageSegments(
      gt_category=np.array([cat_index.get(gt_segs[s]["category_id"], num_cats)
                            for s in gt_keys], np.int64),
      gt_iscrowd=np.array([gt_segs[s].get("iscrowd", 0) == 1 for s in gt_keys], bool),
      gt_area=np.array([gt_segs[s]["area"] for s in gt_keys], np.int64),
      pred_category=pred_cat)
  return pq_core.image_counts(inter, segments, num_cats, pred_area=pred_area)


# ------------------------------------------------------------------ offline driver
_WORKER = {}


def _init_worker(gt_folder, pred_folder, cat_index, pred_json_name):
  _WORKER.update(gt_folder=gt_folder, pred_folder=pred_folder, cat_index=cat_index,
                 pred_json_name=pred_json_name, workspace=None)


def _work(pairs: List[Tuple[Dict, Dict]]) -> Tuple[pq_core.PQCounts, int]:
  if _WORKER["workspace"] is None:
    _WORKER["workspace"] = _Workspace()
  counts = pq_core.PQCounts.zeros(len(_WORKER["cat_index"]))
  for gt_ann, pred_ann in pairs:
    counts += evaluate_pair(gt_ann, pred_ann, _WORKER["gt_folder"],
                            _WORKER["pred_folder"], _WORKER["cat_index"],
                            _WORKER["workspace"], _WORKER["pred_json_name"])
  return counts, len(pairs)


def _load_json(path: str, what: str) -> Dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise PanopticFormatError(f"cannot read {what} {path}: {e}") from e


def pq_compute(gt_json_file: str, pred_json_file: str, gt_folder: Optional[str] = None,
               pred_folder: Optional[str] = None, num_workers: int = 0,
               progress: bool = True) -> Dict:
  """panopticapi's pq_compute: returns {"All", "Things", "Stuff", "per_class"}."""
  gt_json = _load_json(gt_json_file, "ground-truth JSON")
  pred_json = _load_json(pred_json_file, "prediction JSON")
  gt_folder = gt_folder or gt_json_file.replace(".json", "")
  pred_folder = pred_folder or pred_json_file.replace(".json", "")
  for folder, what in ((gt_folder, "ground truth"), (pred_folder, "prediction")):
    if not os.path.isdir(folder):
      raise PanopticFormatError(f"folder {folder} with {what} segmentations doesn't exist")
  categories = gt_json["categories"]
  cat_index = {c["id"]: i for i, c in enumerate(categories)}
  if "annotations" not in pred_json:
    raise PanopticFormatError(f"{pred_json_file}: no 'annotations' list")
  pred_by_image = {a["image_id"]: a for a in pred_json["annotations"]}
  pairs = []
  for gt_ann in gt_json["annotations"]:
    if gt_ann["image_id"] not in pred_by_image:
      raise PanopticFormatError(
          f"{pred_json_file}: no prediction for the image with id: {gt_ann['image_id']}")
    pairs.append((gt_ann, pred_by_image[gt_ann["image_id"]]))

  total = pq_core.PQCounts.zeros(len(categories))
  init_args = (gt_folder, pred_folder, cat_index, pred_json_file)
  num_workers = num_workers or os.cpu_count() or 1
  num_workers = max(1, min(num_workers, len(pairs)))
  # Small chunks (a chunk pickles only JSON dicts) keep both cores busy to the end.
  chunk = max(1, min(8, len(pairs) // (8 * num_workers)))
  chunks = [pairs[i:i + chunk] for i in range(0, len(pairs), chunk)]
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=len(pairs), desc="PQ", unit="img", disable=not progress,
             file=sys.stderr)
  if num_workers == 1:
    _init_worker(*init_args)
    for part in chunks:
      counts, n = _work(part)
      total += counts
      bar.update(n)
  else:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=init_args) as pool:
      for counts, n in pool.imap_unordered(_work, chunks):
        total += counts
        bar.update(n)
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
    """Builds from a data.dataset_info.DatasetInfo."""
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
    self.counts += pq_core.image_counts(inter, segments, self.num_classes)

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
  flags.DEFINE_integer("num_workers", 0, "Worker processes (0: all CPUs).")
  flags.DEFINE_bool("per_class", False, "Also print the per-class table.")
  flags.mark_flags_as_required(["gt_json_file", "pred_json_file"])


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
