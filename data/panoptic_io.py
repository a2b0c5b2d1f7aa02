"""COCO panoptic format <-> internal label encoding (numpy + PIL only, no TensorFlow).

COCO panoptic: a PNG whose pixel (R, G, B) holds the segment id R + 256 G + 256^2 B
(0 = void) and a JSON `segments_info` list {id, category_id, iscrowd, area, bbox}.
Internal (docs/DESIGN.md): semantic * label_divisor + instance, with train ids;
stuff and crowd have instance 0, thing instances 1.., void = ignore_label * D.

Everything here raises `DataValidationError` naming the file and segment at fault.
These functions run in converter worker processes, so they must not import TensorFlow.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from deeplab2_kmax.core.cli import UserError

MAX_PNG_VALUE = 256 ** 3 - 1
# Image modes whose original bytes tf.io.decode_image(channels=3) decodes as intended.
# 16-bit PNGs (Pillow: "I;16*" grey; 48/64-bit colour opens as RGB/RGBA) decode to the
# high byte of each sample in TensorFlow, the faithful 8-bit image, so they are kept.
_TF_SAFE_MODES = {"jpeg": ("RGB", "L"),
                  "png": ("RGB", "RGBA", "L", "LA", "P", "I;16", "I;16B", "I;16L", "I;16N")}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DataValidationError(UserError):
  """Bad input data; the message names the file (and segment) at fault."""


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
  rgb = np.asarray(rgb).astype(np.int64)
  return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
  ids = np.asarray(ids).astype(np.int64)
  if ids.size and (ids.min() < 0 or ids.max() > MAX_PNG_VALUE):
    raise ValueError(f"ids out of the 24-bit PNG range: [{ids.min()}, {ids.max()}]")
  return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def encode_png(array: np.ndarray) -> bytes:
  """Deterministic PNG bytes of a uint8 HxW or HxWx3 array."""
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=6)
  return buf.getvalue()


def encode_id_png(ids: np.ndarray) -> bytes:
  """24-bit ids (COCO ids, or internal labels) as an RGB PNG."""
  return encode_png(id_to_rgb(ids))


def decode_id_png(data: bytes, source: str = "<bytes>") -> np.ndarray:
  return rgb_to_id(_open_rgb(io.BytesIO(data), source))


def _open_rgb(fp, source: str) -> np.ndarray:
  try:
    with Image.open(fp) as im:
      im.load()
      if im.mode != "RGB":
        im = im.convert("RGB")
      return np.asarray(im)
  except (OSError, SyntaxError, ValueError) as e:
    raise DataValidationError(f"{source}: unreadable or corrupt image ({e})") from e


def read_image(path: str) -> tuple[bytes, str, int, int]:
  """Returns (file bytes, format 'jpeg'|'png', height, width); checks it fully decodes."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataValidationError(f"{path}: cannot read image ({e})") from e
  try:
    with Image.open(io.BytesIO(data)) as im:
      fmt = (im.format or "").lower()
      im.load()
      width, height = im.size
      if fmt in ("jpeg", "png") and im.mode in ("I", "F"):
        raise DataValidationError(f"{path}: {im.mode}-mode (32-bit integer or float) "
                                  "image; only 8- and 16-bit images are supported")
      if fmt in ("jpeg", "png") and im.mode not in _TF_SAFE_MODES[fmt]:
        # e.g. CMYK JPEG or 1-bit PNG: store a lossless 8-bit RGB PNG instead.
        data, fmt = encode_png(np.asarray(im.convert("RGB"))), "png"
  except DataValidationError:
    raise
  except (OSError, SyntaxError, ValueError) as e:
    raise DataValidationError(f"{path}: unreadable or corrupt image ({e})") from e
  if fmt not in ("jpeg", "png"):
    raise DataValidationError(f"{path}: unsupported image format {fmt!r} (JPEG or PNG only)")
  return data, fmt, height, width


def png_bit_depth(head: bytes):
  """The bit depth in a PNG's IHDR (its first 25 bytes), None when not a PNG."""
  if len(head) >= 25 and head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
    return head[24]
  return None


def read_panoptic_png(path: str) -> np.ndarray:
  """COCO panoptic PNG -> int64 [H, W] segment ids."""
  if not os.path.isfile(path):
    raise DataValidationError(f"{path}: panoptic PNG not found")
  with open(path, "rb") as f:
    depth = png_bit_depth(f.read(25))
  if depth == 16:
    raise DataValidationError(f"{path}: 16-bit PNG; a panoptic PNG must be 8-bit RGB "
                              "(segment id = R + 256 G + 256^2 B)")
  return rgb_to_id(_open_rgb(path, path))


@dataclasses.dataclass(frozen=True)
class LabelSpec:
  """What the conversion needs to know about the categories (picklable)."""
  category_to_train_id: dict[int, int]
  thing_train_ids: frozenset[int]
  label_divisor: int
  ignore_label: int


def coco_to_internal(ids: np.ndarray, segments_info: Sequence[dict[str, Any]],
                     spec: LabelSpec, source: str) -> np.ndarray:
  """COCO segment-id map + segments_info -> internal int32 label map.

  Validates: duplicate segment ids, unknown categories, PNG ids missing from the JSON,
  JSON ids missing from the PNG, too many instances for the label divisor.
  Thing instances are numbered 1, 2, ... per class in `segments_info` order; crowd
  segments get instance 0 (several crowd segments of one class merge, as in PQ).
  """
  d = spec.label_divisor
  out = np.full(ids.shape, spec.ignore_label * d, dtype=np.int32)
  assigned = ids == 0
  seen: set[int] = set()
  next_instance: dict[int, int] = {}
  for seg in segments_info:
    try:
      seg_id, cat = int(seg["id"]), int(seg["category_id"])
    except (KeyError, TypeError, ValueError) as e:
      raise DataValidationError(f"{source}: malformed segment {seg!r}") from e
    if seg_id in seen:
      raise DataValidationError(f"{source}: duplicate segment id {seg_id} in segments_info")
    seen.add(seg_id)
    if seg_id == 0:
      raise DataValidationError(f"{source}: segment id 0 is reserved for void")
    if cat not in spec.category_to_train_id:
      raise DataValidationError(
          f"{source}: segment {seg_id} has unknown category_id {cat}")
    mask = ids == seg_id  # k masks of N pixels: cheaper than sorting N pixels
    if not mask.any():
      raise DataValidationError(
          f"{source}: segment {seg_id} (category {cat}) is in the JSON but not in the PNG")
    train_id = spec.category_to_train_id[cat]
    if train_id in spec.thing_train_ids and not seg.get("iscrowd", 0):
      instance = next_instance.get(train_id, 1)
      if instance >= d:
        raise DataValidationError(
            f"{source}: segment {seg_id}: more than {d - 1} instances of category {cat} "
            f"do not fit label_divisor {d}")
      next_instance[train_id] = instance + 1
    else:
      instance = 0
    out[mask] = train_id * d + instance
    assigned |= mask
  if not assigned.all():
    missing = np.unique(ids[~assigned])
    raise DataValidationError(
        f"{source}: segment ids {missing[:10].tolist()} are in the PNG but not in the JSON")
  return out


def internal_to_coco(label: np.ndarray, spec: LabelSpec,
                     train_id_to_category_id: dict[int, int]
                     ) -> tuple[np.ndarray, list[dict[str, Any]]]:
  """Internal label map -> (COCO segment-id map, segments_info).

  Segment ids are 1..S in increasing order of the internal value (deterministic).
  """
  d = spec.label_divisor
  label = np.asarray(label).astype(np.int64)
  values, inverse, counts = np.unique(label, return_inverse=True, return_counts=True)
  inverse = inverse.reshape(label.shape)
  new_ids = np.zeros(len(values), dtype=np.int64)
  segments = []
  next_id = 1
  for i, value in enumerate(values):
    train_id, instance = int(value) // d, int(value) % d
    if train_id == spec.ignore_label:
      continue
    if train_id not in train_id_to_category_id:
      raise DataValidationError(f"label value {int(value)}: unknown train id {train_id}")
    new_ids[i] = next_id
    ys, xs = np.nonzero(inverse == i)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)]
    is_crowd = int(train_id in spec.thing_train_ids and instance == 0)
    segments.append({"id": next_id, "category_id": train_id_to_category_id[train_id],
                     "iscrowd": is_crowd, "area": int(counts[i]), "bbox": bbox})
    next_id += 1
  return new_ids[inverse], segments


def load_panoptic_json(path: str) -> dict[str, Any]:
  """Reads a COCO panoptic JSON and checks its top-level structure."""
  try:
    with open(path) as f:
      obj = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DataValidationError(f"{path}: cannot read panoptic JSON ({e})") from e
  for key in ("annotations", "categories"):
    if key not in obj or not isinstance(obj[key], list):
      raise DataValidationError(f"{path}: missing list {key!r}")
  cat_ids = [int(c["id"]) for c in obj["categories"]]
  if len(set(cat_ids)) != len(cat_ids):
    raise DataValidationError(f"{path}: duplicate category ids in 'categories'")
  ann_ids = [str(a.get("image_id")) for a in obj["annotations"]]
  if len(set(ann_ids)) != len(ann_ids):
    dup = sorted({i for i in ann_ids if ann_ids.count(i) > 1})[:5]
    raise DataValidationError(f"{path}: duplicate annotations for image ids {dup}")
  return obj
