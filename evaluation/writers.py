"""Prediction writers: COCO panoptic format (PNG + JSON) and Cityscapes format.

Both convert int panoptic maps in the internal encoding (docs/DESIGN.md:
semantic·label_divisor + instance, void = ignore_label·label_divisor, crowd = thing class
with instance 0) to the files the official evaluation servers read.
"""

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from deeplab2_kmax.core import safe_paths


def internal_to_segments(panoptic: np.ndarray, label_divisor: int, ignore_label: int,
                         thing_train_ids: Sequence[int],
                         train_id_to_category_id: Sequence[int],
                         scores: Optional[Dict[int, float]] = None):
  """Converts one internal panoptic map to (uint32 segment ids [H, W], segments_info).

  Segment id = internal value + 1 (0 stays void). segments_info entries follow COCO:
  {id, category_id, iscrowd, area, bbox[x, y, w, h], isthing} plus "score" when a score
  per internal value is given. A thing class with instance 0 is written as crowd.
  """
  panoptic = np.asarray(panoptic).astype(np.int64)
  semantic = panoptic // label_divisor
  void = semantic == ignore_label
  num_classes = len(train_id_to_category_id)
  bad = ~void & ((semantic < 0) | (semantic >= num_classes))
  if bad.any():
    raise ValueError(f"panoptic value {int(panoptic[bad][0])} has a semantic id outside "
                     f"0..{num_classes - 1} and is not void")
  ids = np.where(void, 0, panoptic + 1)
  counts = np.bincount(ids.reshape(-1))
  counts[0] = 0
  thing = set(int(t) for t in thing_train_ids)
  segments = []
  for sid in np.nonzero(counts)[0]:
    value = int(sid) - 1
    train_id, instance = divmod(value, label_divisor)
    ys, xs = np.nonzero(ids == sid)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    is_thing = train_id in thing
    seg = {"id": int(sid), "category_id": int(train_id_to_category_id[train_id]),
           "iscrowd": int(is_thing and instance == 0), "area": int(counts[sid]),
           "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1], "isthing": int(is_thing)}
    if scores is not None and value in scores:
      seg["score"] = float(scores[value])
    segments.append(seg)
  return ids.astype(np.uint32), segments


def write_id_png(path: str, ids: np.ndarray):
  """Writes segment ids as an RGB PNG (id = R + 256 G + 256^2 B)."""
  ids = np.asarray(ids, np.uint32)
  if ids.max(initial=0) >= (1 << 24):
    raise ValueError(f"{path}: segment id {int(ids.max())} does not fit in RGB")
  rgb = np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(path)


class CocoPanopticWriter:
  """Accumulates COCO-panoptic predictions: `<out>/<name>/*.png` + `<out>/<name>.json`.

  Category ids are the dataset's original ids (COCO test-dev submission format).
  """

  def __init__(self, output_dir: str, categories: List[Dict], label_divisor: int,
               ignore_label: int, thing_train_ids: Sequence[int],
               train_id_to_category_id: Sequence[int], name: str = "panoptic"):
    self.png_dir = os.path.join(output_dir, name)
    self.json_path = os.path.join(output_dir, name + ".json")
    os.makedirs(self.png_dir, exist_ok=True)
    self.categories = categories
    self.label_divisor = label_divisor
    self.ignore_label = ignore_label
    self.thing_train_ids = list(thing_train_ids)
    self.train_id_to_category_id = list(train_id_to_category_id)
    self.annotations = []
    self.images = []

  def add(self, image_id, panoptic: np.ndarray, file_name: Optional[str] = None,
          scores: Optional[Dict[int, float]] = None, is_groundtruth: bool = False,
          source: str = "image id"):
    """Adds one image. `file_name` defaults to `<image_id>.png`; it must stay inside the
    PNG folder (`deeplab2_kmax/core/safe_paths.py`); `source` (where the name came from, e.g. a
    flag) starts the error message otherwise."""
    ids, segments = internal_to_segments(panoptic, self.label_divisor, self.ignore_label,
                                         self.thing_train_ids,
                                         self.train_id_to_category_id, scores)
    if not is_groundtruth:
      for seg in segments:
        seg.pop("isthing")
    png_name = os.path.splitext(file_name or str(image_id))[0] + ".png"
    write_id_png(safe_paths.inside(self.png_dir, png_name, source, "image file name"), ids)
    self.annotations.append({"image_id": image_id, "file_name": png_name,
                             "segments_info": segments})
    self.images.append({"id": image_id, "file_name": png_name,
                        "height": int(ids.shape[0]), "width": int(ids.shape[1])})

  def close(self) -> str:
    with open(self.json_path, "w") as f:
      json.dump({"images": self.images, "annotations": self.annotations,
                 "categories": self.categories}, f)
    return self.json_path


def write_cityscapes_panoptic(output_dir: str, image_name: str, panoptic: np.ndarray,
                              label_divisor: int, ignore_label: int,
                              thing_train_ids: Sequence[int],
                              train_id_to_label_id: Sequence[int],
                              scores: Optional[Dict[int, float]] = None) -> Dict:
  """Writes one Cityscapes panoptic prediction PNG and returns its JSON annotation.

  Cityscapes' panoptic evaluation (cityscapesscripts evalPanopticSemanticLabeling) reads
  COCO-panoptic PNG + JSON with Cityscapes label ids (not train ids) as category ids;
  the annotation's image_id / file_name follow `<city>_<seq>_<frame>` naming.
  """
  image_id = os.path.basename(image_name)
  for suffix in ("_leftImg8bit.png", "_gtFine_panoptic.png", ".png"):
    if image_id.endswith(suffix):
      image_id = image_id[:-len(suffix)]
      break
  ids, segments = internal_to_segments(panoptic, label_divisor, ignore_label,
                                       thing_train_ids, train_id_to_label_id, scores)
  for seg in segments:
    seg.pop("isthing")
  file_name = image_id + "_panoptic.png"
  write_id_png(os.path.join(output_dir, file_name), ids)
  return {"image_id": image_id, "file_name": file_name, "segments_info": segments}


class CityscapesPanopticWriter:
  """Collects Cityscapes panoptic predictions: `<out>/<name>/*.png` + `<out>/<name>.json`.

  The layout of cityscapesscripts' `createPanopticImgs` (COCO panoptic with Cityscapes
  label ids): evaluate with `csEvalPanopticSemanticLabeling --prediction-json-file
  <out>/<name>.json --prediction-folder <out>/<name>`. `train_id_to_label_id` maps our
  train ids to Cityscapes label ids (e.g. 0 -> 7 road, 11 -> 24 person).
  """

  def __init__(self, output_dir: str, categories: List[Dict], label_divisor: int,
               ignore_label: int, thing_train_ids: Sequence[int],
               train_id_to_label_id: Sequence[int],
               name: str = "cityscapes_panoptic_val"):
    self.png_dir = os.path.join(output_dir, name)
    self.json_path = os.path.join(output_dir, name + ".json")
    os.makedirs(self.png_dir, exist_ok=True)
    self.categories = categories
    self.kwargs = dict(label_divisor=label_divisor, ignore_label=ignore_label,
                       thing_train_ids=list(thing_train_ids),
                       train_id_to_label_id=list(train_id_to_label_id))
    self.annotations = []

  def add(self, image_name: str, panoptic: np.ndarray,
          scores: Optional[Dict[int, float]] = None) -> Dict:
    ann = write_cityscapes_panoptic(self.png_dir, image_name, panoptic, scores=scores,
                                    **self.kwargs)
    self.annotations.append(ann)
    return ann

  def close(self) -> str:
    with open(self.json_path, "w") as f:
      json.dump({"annotations": self.annotations, "categories": self.categories}, f)
    return self.json_path
