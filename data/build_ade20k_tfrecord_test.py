"""ADE20K converter on a tiny generated tree in Mask2Former's COCO-panoptic layout."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import ade20k_categories as ade
from data import build_ade20k_tfrecord as build
from data import panoptic_io
from data.panoptic_io import DataValidationError
from data import tfrecord_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = 1000
VOID = 255 * D
# deeplab2's ADE20K thing classes (its 1-based ids: 0 is void there).
DEEPLAB2_THING_IDS = [
    8, 9, 11, 13, 15, 16, 19, 20, 21, 23, 24, 25, 28, 31, 32, 33, 34, 36, 37, 38, 39, 40,
    42, 43, 44, 45, 46, 48, 50, 51, 54, 56, 57, 58, 59, 63, 65, 66, 67, 68, 70, 71, 72, 73,
    74, 75, 76, 77, 79, 81, 82, 83, 84, 86, 87, 88, 89, 90, 91, 93, 94, 96, 98, 99, 103,
    104, 105, 108, 109, 111, 112, 113, 116, 117, 119, 120, 121, 122, 124, 125, 126, 127,
    128, 130, 131, 133, 134, 135, 136, 137, 138, 139, 140, 143, 144, 145, 147, 148, 149,
    150]


def _image_1(ids):
  """wall, floor, two persons, a flag, void. Segment ids use all three PNG bytes."""
  ids[:4] = 0x0A0B0C                        # wall (0)
  ids[8:] = 0x00FF01                        # floor (3)
  ids[4:8, 0:5] = 0x123456                  # person (12), instance 1
  ids[4:8, 6:10] = 0x010000                 # person, instance 2
  ids[4:8, 11:14] = 0x000203                # flag (149)
  return [(0x0A0B0C, 0, 0), (0x00FF01, 3, 0), (0x123456, 12, 0), (0x010000, 12, 0),
          (0x000203, 149, 0)]


def _image_2(ids):
  """sky, a crowd of beds, a car, void."""
  ids[:5] = 7                               # sky (2)
  ids[5:, :6] = 9                           # bed (7), crowd
  ids[5:, 8:] = 0x7F7F7F                    # car (20)
  return [(7, 2, 0), (9, 7, 1), (0x7F7F7F, 20, 0)]


def _fake_ade20k(root, one_based_ids=False):
  os.makedirs(root / "images" / "validation")
  os.makedirs(root / "ade20k_panoptic_val")
  images, annotations = [], []
  for n, (fill, (h, w)) in enumerate([(_image_1, (12, 16)), (_image_2, (10, 14))], 1):
    name = f"ADE_val_{n:08d}"
    ids = np.zeros((h, w), np.int64)
    segs = [{"id": s, "category_id": c, "iscrowd": crowd, "area": int((ids == s).sum()),
             "bbox": [0, 0, 1, 1]} for s, c, crowd in fill(ids)]
    rgb = np.random.default_rng(n).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "images" / "validation" / f"{name}.jpg")
    (root / "ade20k_panoptic_val" / f"{name}.png").write_bytes(panoptic_io.encode_id_png(ids))
    images.append({"id": name, "file_name": f"{name}.jpg", "height": h, "width": w})
    annotations.append({"image_id": name, "file_name": f"{name}.png", "segments_info": segs})
  shift = int(one_based_ids)
  cats = [{"id": c.id + shift, "name": c.name, "isthing": c.isthing, "color": list(c.color)}
          for c in ade.CATEGORIES]
  with open(root / "ade20k_panoptic_val.json", "w") as f:
    json.dump({"images": images, "annotations": annotations, "categories": cats}, f)
  return root


def _edit_json(root, fn):
  path = root / "ade20k_panoptic_val.json"
  obj = json.load(open(path))
  fn(obj)
  json.dump(obj, open(path, "w"))


def test_categories_follow_deeplab2_order():
  info = ade.ade20k_info()
  assert (info.num_classes, info.label_divisor, info.ignore_label) == (150, 1000, 255)
  assert len(info.thing_train_ids) == 100 and len(info.stuff_train_ids) == 50
  assert [t + 1 for t in info.thing_train_ids] == DEEPLAB2_THING_IDS
  names = info.names
  assert (names[0], names[1], names[2], names[7], names[12], names[20]) == (
      "wall", "building", "sky", "bed", "person", "car")
  assert (names[44], names[89], names[136], names[149]) == (
      "chest of drawers", "television", "traffic light", "flag")
  assert info.category_id_to_train_id == {t: t for t in range(150)}
  assert info.colors[0] == [120, 120, 120] and info.colors[149] == [92, 0, 255]
  # deeplab2's class-head channels: things (bed first, flag last), then stuff.
  order = info.things_then_stuff_train_ids
  assert (order[0], order[99], order[100], order[101], order[149]) == (7, 149, 0, 1, 145)
  assert sorted(order) == list(range(150))


def test_conversion_values_and_dataset_info(tmp_path):
  root = _fake_ade20k(tmp_path / "ade")
  info = build.convert_ade20k(str(root), "val", str(tmp_path / "out"), num_shards=2)
  assert info.num_examples == {"val": 2}
  obj = json.load(open(tmp_path / "out" / "dataset_info.json"))
  assert {k: obj[k] for k in ("name", "num_classes", "label_divisor", "ignore_label",
                              "num_examples")} == {
      "name": "ade20k_panoptic", "num_classes": 150, "label_divisor": 1000,
      "ignore_label": 255, "num_examples": {"val": 2}}
  assert len(obj["categories"]) == 150
  assert obj["categories"][12] == {"id": 12, "train_id": 12, "name": "person",
                                   "isthing": 1, "color": [150, 5, 61]}
  assert obj["categories"][3] == {"id": 3, "train_id": 3, "name": "floor", "isthing": 0,
                                  "color": [80, 50, 50]}
  assert sum(c["isthing"] for c in obj["categories"]) == 100

  files = sorted(tf.io.gfile.glob(str(tmp_path / "out" / "val-*.tfrecord")))
  assert len(files) == 2
  examples = [tfrecord_format.parse_example(r) for r in tf.data.TFRecordDataset(files)]
  assert [e["image_id"].numpy() for e in examples] == [b"ADE_val_00000001",
                                                       b"ADE_val_00000002"]
  pan = examples[0]["panoptic"].numpy()
  assert pan.shape == (12, 16) and examples[0]["image"].shape == (12, 16, 3)
  expected = np.full((12, 16), VOID)
  expected[:4] = 0                          # wall: stuff, train id 0
  expected[8:] = 3 * D                      # floor: stuff
  expected[4:8, 0:5] = 12 * D + 1           # person: things numbered per class
  expected[4:8, 6:10] = 12 * D + 2
  expected[4:8, 11:14] = 149 * D + 1        # flag: the last class, a thing
  np.testing.assert_array_equal(pan, expected)
  pan = examples[1]["panoptic"].numpy()
  expected = np.full((10, 14), VOID)
  expected[:5] = 2 * D                      # sky
  expected[5:, :6] = 7 * D                  # crowd of beds: thing class, instance 0
  expected[5:, 8:] = 20 * D + 1             # car
  np.testing.assert_array_equal(pan, expected)


def test_bad_input_names_the_file_and_segment(tmp_path):
  root = _fake_ade20k(tmp_path / "unknown")
  _edit_json(root, lambda o: o["annotations"][1]["segments_info"][2].update(category_id=150))
  with pytest.raises(DataValidationError,
                     match=r"ADE_val_00000002\.png: segment 8355711 has unknown category_id 150"):
    build.convert_ade20k(str(root), "val", str(tmp_path / "o1"), 1)

  root = _fake_ade20k(tmp_path / "shifted", one_based_ids=True)
  with pytest.raises(DataValidationError, match=(
      r"ade20k_panoptic_val\.json: category id 7 \(road\) has isthing 0, but ADE20K-150 "
      r"class 7 is 'bed' with isthing 1")):
    build.convert_ade20k(str(root), "val", str(tmp_path / "o2"), 1)

  with pytest.raises(DataValidationError, match="ADE20K splits are train and val"):
    build.convert_ade20k(str(root), "test", str(tmp_path / "o3"), 1)
  assert not tf.io.gfile.glob(str(tmp_path / "o*" / "*.tfrecord*"))


def test_cli_fails_with_one_error_line(tmp_path):
  root = _fake_ade20k(tmp_path / "ade")
  os.remove(root / "images" / "validation" / "ADE_val_00000002.jpg")
  cmd = [sys.executable, os.path.join(REPO, "data", "build_ade20k_tfrecord.py"),
         f"--ade20k_root={root}", "--split=val", f"--output_dir={tmp_path / 'out'}",
         "--num_shards=1", "--num_workers=2"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=env)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and last.endswith(
      "ADE_val_00000002.jpg: cannot read image ([Errno 2] No such file or directory: "
      f"'{root / 'images' / 'validation' / 'ADE_val_00000002.jpg'}')")
  assert not os.path.exists(tmp_path / "out" / "val-00000-of-00001.tfrecord")
