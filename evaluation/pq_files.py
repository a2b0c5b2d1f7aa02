"""PQ counts of one (ground truth, prediction) pair of COCO panoptic PNG + JSON entries.

Each PNG is read once into a reusable uint32 id buffer (`evaluation.png_decode`, Pillow
as the fallback) and all (gt, pred) segment pairs are counted in one pass over the
pixels (`pair_counts`), then `evaluation.pq_core` applies panopticapi's rules. The
checks and their messages are panopticapi's, naming the file and the segment.
"""

from typing import Dict, Optional, Sequence

import numpy as np
from PIL import Image

from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core import safe_paths
from evaluation import png_decode
from evaluation import pq_core

ID_SPACE = 1 << 24  # RGB-encoded ids: R + 256 G + 256^2 B.


class PanopticFormatError(UserError):
  """Invalid prediction/ground-truth files (message names the file and segment)."""


# --------------------------------------------------------------------------- PNG ids
def _read_with_pillow(path: str) -> np.ndarray:
  img = Image.open(path)
  img.load()
  if img.mode == "RGB":
    img = img.convert("RGBX")
  if img.mode in ("RGBX", "RGBA"):
    return np.asarray(img).view(np.uint32)[..., 0] & np.uint32(0xFFFFFF)
  arr = np.asarray(img)
  if arr.ndim != 2:
    raise PanopticFormatError(f"{path}: unsupported PNG mode {img.mode}")
  if arr.size and (arr.min() < 0 or arr.max() >= ID_SPACE):
    raise PanopticFormatError(f"{path}: pixel values outside the id range 0..{ID_SPACE - 1}")
  return arr.astype(np.uint32)


def read_id_png(path: str, out: Optional[np.ndarray] = None) -> np.ndarray:
  """Reads a COCO-panoptic PNG into uint32 segment ids (R + 256 G + 256^2 B).

  As panopticapi's ``rgb2id(np.array(Image.open(path)))``: RGB(A) pixels give
  R + 256 G + 256^2 B, single-channel images (L, P, I;16) their values.
  `out`: an optional reusable [H, W] uint32 buffer (used when the size matches).
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
    ids = png_decode.decode_ids(data, out)
    if ids is not None:
      return ids
    return _read_with_pillow(path)
  except (OSError, ValueError, SyntaxError) as e:
    if isinstance(e, PanopticFormatError):
      raise
    raise PanopticFormatError(f"{path}: cannot read panoptic PNG ({e})") from e


# ----------------------------------------------------------------- pixel-pair counts
@png_decode.jit
def _count_runs(gt, pred, rows, cols, counts):  # pragma: no cover - compiled
  """counts[rows[g] + cols[p]] += 1 per pixel, one table look-up per run of equal pairs.

  gt, pred: uint32 [N] ids (24-bit). Two pixels per step: a uint64 of two pixels equal
  to the current pair twice continues the run.
  """
  mask = np.uint32(ID_SPACE - 1)  # ids are 24-bit; the mask keeps any id in the tables
  n = gt.size
  last_g = gt[0]
  last_p = pred[0]
  run = 0
  pairs = n // 2
  if pairs and gt.ctypes.data % 8 == 0 and pred.ctypes.data % 8 == 0:
    gw = gt[:2 * pairs].view(np.uint64)
    pw = pred[:2 * pairs].view(np.uint64)
    g2 = np.uint64(last_g) | (np.uint64(last_g) << np.uint64(32))
    p2 = np.uint64(last_p) | (np.uint64(last_p) << np.uint64(32))
    for w in range(pairs):
      if gw[w] == g2 and pw[w] == p2:
        run += 2
        continue
      for i in range(2 * w, 2 * w + 2):
        g = gt[i]
        p = pred[i]
        if g != last_g or p != last_p:
          counts[rows[last_g & mask] + cols[last_p & mask]] += run
          last_g = g
          last_p = p
          run = 0
        run += 1
      g2 = np.uint64(last_g) | (np.uint64(last_g) << np.uint64(32))
      p2 = np.uint64(last_p) | (np.uint64(last_p) << np.uint64(32))
    start = 2 * pairs
  else:
    start = 0
  for i in range(start, n):
    g = gt[i]
    p = pred[i]
    if g != last_g or p != last_p:
      counts[rows[last_g & mask] + cols[last_p & mask]] += run
      last_g = g
      last_p = p
      run = 0
    run += 1
  counts[rows[last_g & mask] + cols[last_p & mask]] += run


def warm_up():
  """Compiles (or loads from numba's disk cache) all kernels once, in this thread."""
  png_decode.warm_up()
  if png_decode.AVAILABLE:
    one = np.zeros(1, np.uint32)
    _count_runs(one, one, np.zeros(1, np.int64), np.zeros(1, np.int64),
                np.zeros(1, np.int64))


class Workspace:
  """Per-thread workspace, reused for every image pair (no fresh pages per image).

  Two 2^24-entry int64 lookup tables map a PNG segment id straight to its share of the
  pair key ``row * num_cols + col`` (gt: row, pred: col), so one pass over the pixels
  gives the whole intersection matrix. Index 0 of both axes is "id not listed in the
  JSON" because that is what the zero-filled tables hold (so only the few listed ids are
  written and reset per image; np.zeros pages are lazy); index 1 is void (PNG id 0),
  2.. the listed segments in JSON order.
  """

  def __init__(self):
    self.rows = np.zeros(ID_SPACE, np.int64)
    self.cols = np.zeros(ID_SPACE, np.int64)
    self.buffers = {}

  def buffer(self, name: str, shape, dtype) -> np.ndarray:
    buf = self.buffers.get(name)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
      buf = self.buffers[name] = np.empty(shape, dtype)
    return buf

  def read(self, path: str, name: str) -> np.ndarray:
    """Decodes a PNG into the reusable uint32 id buffer `name`."""
    ids = read_id_png(path, self.buffers.get(name))
    self.buffers[name] = ids
    return ids

  def pair_counts(self, gt_ids: np.ndarray, pred_ids: np.ndarray, gt_keys: Sequence[int],
                  pred_keys: Sequence[int], compiled: Optional[bool] = None) -> np.ndarray:
    """Pixel counts [num_gt + 2, num_pred + 2] over (row, col) as described above.

    compiled: count with the numba kernel (default: when numba is installed) or numpy.
    """
    num_cols = len(pred_keys) + 2
    size = (len(gt_keys) + 2) * num_cols
    gt_keys = np.asarray(gt_keys, np.intp)
    pred_keys = np.asarray(pred_keys, np.intp)
    self.rows[0] = num_cols
    self.rows[gt_keys] = np.arange(2, len(gt_keys) + 2) * num_cols
    self.cols[0] = 1
    self.cols[pred_keys] = np.arange(2, len(pred_keys) + 2)
    try:
      if png_decode.AVAILABLE if compiled is None else compiled:
        counts = np.zeros(size, np.int64)
        _count_runs(np.ascontiguousarray(gt_ids).reshape(-1),
                    np.ascontiguousarray(pred_ids).reshape(-1), self.rows, self.cols, counts)
      else:
        counts = self._numpy_counts(gt_ids, pred_ids, size)
    finally:
      self.rows[gt_keys] = 0
      self.rows[0] = 0
      self.cols[pred_keys] = 0
      self.cols[0] = 0
    return counts.reshape(len(gt_keys) + 2, num_cols)

  def _numpy_counts(self, gt_ids, pred_ids, size):
    gt_idx = self.buffer("gt_idx", gt_ids.shape, np.intp)
    pred_idx = self.buffer("pred_idx", pred_ids.shape, np.intp)
    np.copyto(gt_idx, gt_ids, casting="safe")
    np.copyto(pred_idx, pred_ids, casting="safe")
    # mode="clip": ids are < 2^24 by construction, and clip skips numpy's slow
    # bounds-checking path (4x faster than the default mode="raise").
    keys = np.take(self.rows, gt_idx, mode="clip", out=self.buffer("keys", gt_idx.shape, np.intp))
    keys += np.take(self.cols, pred_idx, mode="clip",
                    out=self.buffer("keys2", pred_idx.shape, np.intp))
    return np.bincount(keys.reshape(-1), minlength=size)


# ------------------------------------------------------------------ one image pair
def _segments_by_id(ann: Dict, json_name: str) -> Dict[int, Dict]:
  segs = {}
  for seg in ann.get("segments_info", []):
    try:
      sid = int(seg["id"])
    except (TypeError, ValueError) as e:
      raise PanopticFormatError(f"{json_name}: image {ann.get('image_id')} segment id "
                                f"{seg['id']!r} is not an integer") from e
    if not 0 < sid < ID_SPACE:
      raise PanopticFormatError(
          f"{json_name}: image {ann.get('image_id')} segment id {sid} is out of range "
          f"(1..{ID_SPACE - 1}; 0 is void)")
    segs[sid] = seg  # later entries overwrite earlier ones, as in panopticapi
  return segs


def _png_path(folder: str, ann: Dict, json_name: str) -> str:
  try:
    return safe_paths.inside(folder, ann.get("file_name"), json_name,
                             f"file_name of image {ann.get('image_id')}")
  except safe_paths.PathOutsideFolderError as e:
    raise PanopticFormatError(str(e)) from e


def evaluate_pair(gt_ann: Dict, pred_ann: Dict, gt_folder: str, pred_folder: str,
                  cat_index: Dict[int, int], workspace: Workspace,
                  pred_json_name: str = "pred_json",
                  gt_json_name: str = "gt_json") -> pq_core.PQCounts:
  """PQ counts of one (gt, prediction) PNG pair, with panopticapi's sanity checks.
  Each PNG must lie inside its folder (`deeplab2_kmax/core/safe_paths.py`)."""
  num_cats = len(cat_index)
  image_id = gt_ann["image_id"]
  gt_path = _png_path(gt_folder, gt_ann, gt_json_name)
  pred_path = _png_path(pred_folder, pred_ann, pred_json_name)
  gt_ids = workspace.read(gt_path, "gt")
  pred_ids = workspace.read(pred_path, "pred")
  if gt_ids.shape != pred_ids.shape:
    raise PanopticFormatError(
        f"{pred_path}: size {pred_ids.shape} differs from ground truth {gt_path} "
        f"{gt_ids.shape} (image {image_id})")
  gt_segs = _segments_by_id(gt_ann, gt_json_name)
  pred_segs = _segments_by_id(pred_ann, pred_json_name)
  gt_keys = list(gt_segs)
  pred_keys = list(pred_segs)

  counts = workspace.pair_counts(gt_ids, pred_ids, gt_keys, pred_keys)
  if counts[:, 0].any():  # prediction ids missing from the JSON
    listed = np.isin(pred_ids, np.asarray([0] + pred_keys, np.int64))
    bad = np.unique(pred_ids[~listed])
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
  return pq_core.image_counts(inter, segments, num_cats, pred_area=pred_area,
                              gt_ids=gt_keys)
