r"""Writes the synthetic COCO-panoptic dataset (the embedded default of demo and tests).

  python data/make_synthetic.py --output_dir=DIR --num_train=N --num_val=M --seed=S \
      [--image_size=128]

Layout (COCO-like), for each split in (train, val):
  DIR/<split>/<split>_000000.jpg                    RGB images
  DIR/annotations/panoptic_<split>/<split>_000000.png   COCO panoptic PNGs
  DIR/annotations/panoptic_<split>.json             images, annotations, categories

Scenes: horizontal "stuff" bands (sky: blue gradient, wall: grey tiles, ground: green
stripes) under 1-4 "thing" instances (red disks, yellow squares, purple triangles; varied
size 18-40% of the side, colour, rotation; overlapping/touching, but each keeps >= half of
its area visible), sometimes a small crowd group (several tiny shapes of one class, one
iscrowd segment) and small void patches (noise, segment id 0). Category ids are
non-contiguous like COCO. Deterministic for a seed; learnable by a tiny model.
"""
from __future__ import annotations

import colorsys
import json
import os

import numpy as np
from absl import flags
from PIL import Image
from tqdm import tqdm


from data import panoptic_io
from deeplab2_kmax.core import cli

# Non-contiguous ids (like COCO) so the id -> train id mapping is exercised.
CATEGORIES = [
    {"id": 2, "name": "disk", "isthing": 1, "color": [220, 40, 40]},
    {"id": 5, "name": "square", "isthing": 1, "color": [230, 200, 30]},
    {"id": 9, "name": "triangle", "isthing": 1, "color": [140, 50, 200]},
    {"id": 17, "name": "sky", "isthing": 0, "color": [120, 170, 240]},
    {"id": 23, "name": "wall", "isthing": 0, "color": [128, 128, 128]},
    {"id": 41, "name": "ground", "isthing": 0, "color": [60, 160, 60]},
]
_THING_HUES = {2: 0.0, 5: 0.15, 9: 0.77}


def _shape_mask(kind: int, yy, xx, cy, cx, size, angle) -> np.ndarray:
  """Boolean mask of a disk / square / triangle of diameter ~`size`."""
  dy, dx = yy - cy, xx - cx
  if kind == 2:
    return dy * dy + dx * dx <= (size / 2) ** 2
  c, s = np.cos(angle), np.sin(angle)
  u, v = c * dx + s * dy, -s * dx + c * dy
  if kind == 5:
    half = size / 2.4
    return (np.abs(u) <= half) & (np.abs(v) <= half)
  r = size / 1.6  # triangle: three half-planes around the centre
  inside = np.ones_like(u, dtype=bool)
  for k in range(3):
    a = angle + k * 2 * np.pi / 3
    inside &= (np.cos(a) * dx + np.sin(a) * dy) <= r / 2
  return inside


def _hsv(h, s, v) -> np.ndarray:
  return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255


def _stuff_texture(cat: int, rng, yy, xx, height) -> np.ndarray:
  h, w = yy.shape
  noise = rng.normal(0, 6, (h, w, 1)).astype(np.float32)
  if cat == 17:  # sky: vertical blue gradient
    top, bottom = _hsv(0.58, 0.55, 0.95), _hsv(0.57, 0.25, 1.0)
    t = (yy / max(height - 1, 1))[..., None]
    return top * (1 - t) + bottom * t + noise
  if cat == 23:  # wall: grey tiles with dark joints
    base = _hsv(0.0, 0.0, rng.uniform(0.45, 0.6))
    period = int(rng.integers(8, 13))
    joints = ((yy % period) < 2) | (((xx + (yy // period) * period // 2) % (2 * period)) < 2)
    return base + noise - 45 * joints[..., None]
  base = _hsv(rng.uniform(0.27, 0.33), 0.65, rng.uniform(0.5, 0.65))  # ground: green stripes
  stripes = 18 * np.sin((xx + yy) * 0.5)[..., None]
  return base + stripes + noise


def render_scene(rng: np.random.Generator, size: int):
  """Returns (image uint8 [S,S,3], segment-id map int64 [S,S], segments_info)."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  image = np.zeros((size, size, 3), np.float32)
  seg = np.zeros((size, size), np.int64)
  draws = rng.integers(1, 2 ** 24, 64)
  ids = iter(draws[np.sort(np.unique(draws, return_index=True)[1])])  # unique, in order
  info: dict[int, dict] = {}

  # Stuff: sky on top, optional wall band, ground at the bottom; wavy boundaries.
  bands = [17, 23, 41] if rng.random() < 0.7 else [17, 41]
  cuts = np.sort(rng.uniform(0.25, 0.75, len(bands) - 1)) * size
  if len(cuts) == 2 and cuts[1] - cuts[0] < 0.15 * size:
    cuts[1] = min(cuts[0] + 0.15 * size, 0.9 * size)
  boundary = [c + rng.uniform(1, 4) * np.sin(xx * rng.uniform(0.05, 0.15)
                                              + rng.uniform(0, 6)) for c in cuts]
  band = np.zeros((size, size), np.int64)
  for b in boundary:
    band += yy >= b
  for k, cat in enumerate(bands):
    region = band == k
    if region.any():
      sid = int(next(ids))
      seg[region] = sid
      info[sid] = {"id": sid, "category_id": cat, "iscrowd": 0}
      image[region] = _stuff_texture(cat, rng, yy, xx, size)[region]

  def paint_thing(cat, mask):
    hue = _THING_HUES[cat] + rng.uniform(-0.04, 0.04)
    color = _hsv(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    shade = 1.0 - 0.25 * ((yy - yy[mask].min()) / size)[..., None]
    image[mask] = (color * shade + rng.normal(0, 4, (size, size, 1)))[mask]

  # Crowd: a cluster of small shapes of one thing class, one iscrowd segment.
  if rng.random() < 0.3:
    cat = int(rng.choice(list(_THING_HUES)))
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    crowd = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(3, 6))):
      oy, ox = rng.normal(0, 0.05 * size, 2)
      crowd |= _shape_mask(cat, yy, xx, cy + oy, cx + ox, 0.07 * size, rng.uniform(0, 6.3))
    sid = int(next(ids))
    seg[crowd] = sid
    info[sid] = {"id": sid, "category_id": cat, "iscrowd": 1}
    paint_thing(cat, crowd)

  # Things: each new instance may hide at most half of the visible area of earlier ones.
  masks: list[tuple[int, np.ndarray]] = []
  for _ in range(int(rng.integers(1, 5))):
    for _attempt in range(20):
      cat = int(rng.choice(list(_THING_HUES)))
      diam = rng.uniform(0.18, 0.4) * size
      cy, cx = rng.uniform(diam / 2, size - diam / 2, 2)
      mask = _shape_mask(cat, yy, xx, cy, cx, diam, rng.uniform(0, 6.3))
      if all((m & ~mask).sum() >= 0.5 * m.sum() for _, m in masks):
        break
    else:
      continue
    masks = [(sid, m & ~mask) for sid, m in masks]
    sid = int(next(ids))
    masks.append((sid, mask))
    seg[mask] = sid
    info[sid] = {"id": sid, "category_id": cat, "iscrowd": 0}
    paint_thing(cat, mask)

  # Void: a few small noise patches.
  for _ in range(int(rng.integers(0, 3))):
    h, w = (rng.uniform(0.05, 0.1, 2) * size).astype(int) + 1
    y0, x0 = rng.integers(0, size - h), rng.integers(0, size - w)
    image[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255, (h, w, 3))
    seg[y0:y0 + h, x0:x0 + w] = 0

  image = np.clip(image, 0, 255).astype(np.uint8)
  present, counts = np.unique(seg, return_counts=True)
  segments = []
  for sid, area in zip(present.tolist(), counts.tolist()):
    if sid == 0:
      continue
    ys, xs = np.nonzero(seg == sid)
    segments.append(dict(info[sid], area=int(area),
                         bbox=[int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                               int(ys.max() - ys.min() + 1)]))
  return image, seg, segments


def write_split(output_dir: str, split: str, num_images: int, seed: int,
                image_size: int = 128) -> str:
  """Writes one split; returns the path of its panoptic JSON."""
  image_dir = os.path.join(output_dir, split)
  png_dir = os.path.join(output_dir, "annotations", f"panoptic_{split}")
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(png_dir, exist_ok=True)
  split_key = sum(ord(c) * 31 ** i for i, c in enumerate(split)) % (2 ** 31)
  images, annotations = [], []
  for i in tqdm(range(num_images), desc=f"synthetic {split}", unit="img"):
    rng = np.random.default_rng([seed, split_key, i])
    image, seg, segments = render_scene(rng, image_size)
    name = f"{split}_{i:06d}"
    Image.fromarray(image).save(os.path.join(image_dir, name + ".jpg"), quality=95)
    with open(os.path.join(png_dir, name + ".png"), "wb") as f:
      f.write(panoptic_io.encode_id_png(seg))
    images.append({"id": i, "file_name": name + ".jpg", "height": image_size,
                   "width": image_size})
    annotations.append({"image_id": i, "file_name": name + ".png", "segments_info": segments})
  json_path = os.path.join(output_dir, "annotations", f"panoptic_{split}.json")
  with open(json_path, "w") as f:
    json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
  return json_path


def make_dataset(output_dir: str, num_train: int, num_val: int, seed: int,
                 image_size: int = 128) -> dict[str, str]:
  """Writes both splits; returns {split: panoptic json path}."""
  if image_size < 32:
    raise cli.UserError(f"--image_size={image_size}: must be >= 32")
  out = {}
  for split, n in (("train", num_train), ("val", num_val)):
    if n > 0:
      out[split] = write_split(output_dir, split, n, seed, image_size)
  return out


FLAGS = flags.FLAGS


def _define_flags():
  """Flags are defined only when run as a script (modules stay importable together)."""
  flags.DEFINE_string("output_dir", None, "Where to write the dataset.")
  flags.DEFINE_integer("num_train", 200, "Number of training images.")
  flags.DEFINE_integer("num_val", 50, "Number of validation images.")
  flags.DEFINE_integer("seed", 0, "Random seed (same seed -> same bytes).")
  flags.DEFINE_integer("image_size", 128, "Side of the square images in pixels.")


def main(argv):
  del argv
  if not FLAGS.output_dir:
    raise cli.UserError("--output_dir: required flag not set")
  paths = make_dataset(FLAGS.output_dir, FLAGS.num_train, FLAGS.num_val, FLAGS.seed,
                       FLAGS.image_size)
  for split, path in paths.items():
    print(f"{split}: python data/build_coco_tfrecord.py "
          f"--image_dir={os.path.join(FLAGS.output_dir, split)} --panoptic_json={path} "
          f"--panoptic_dir={path[:-5]} --output_dir=OUT --split={split} --num_shards=2")


def entry():
  """Console-script entry point."""
  _define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
