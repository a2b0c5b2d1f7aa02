"""Cityscapes converter on a tiny fake Cityscapes tree (createPanopticImgs layout)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import build_cityscapes_tfrecord as cs
from data import dump_tfrecord
from data import panoptic_io
from data.panoptic_io import DataValidationError
from data import tfrecord_format

NAMES = ["aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019"]


def _fake_tree(root, split="val", categories_use_train_id=False):
  """Segment ids as createPanopticImgs writes them: stuff = label id, thing instances
  = id * 1000 + k, crowd thing groups = label id (< 1000)."""
  images, annotations = [], []
  os.makedirs(root / "gtFine" / f"cityscapes_panoptic_{split}")
  for n, name in enumerate(NAMES):
    ids = np.full((16, 32), 7, np.int64)          # road
    ids[:5] = 23                                  # sky
    ids[6:12, 2:9] = 26000 + n                    # car instance
    ids[6:12, 10:14] = 26001 + n                  # another car
    ids[7:13, 20:24] = 24                         # crowd of people
    ids[14:, 28:] = 0                             # unlabeled
    city = name.split("_")[0]
    os.makedirs(root / "leftImg8bit" / split / city, exist_ok=True)
    rgb = np.random.default_rng(n).integers(0, 255, (16, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
    png = f"{name}_gtFine_panoptic.png"
    with open(root / "gtFine" / f"cityscapes_panoptic_{split}" / png, "wb") as f:
      f.write(panoptic_io.encode_id_png(ids))
    segs = [{"id": int(v), "category_id": int(v if v < 1000 else v // 1000),
             "iscrowd": int(v == 24), "area": int((ids == v).sum()), "bbox": [0, 0, 1, 1]}
            for v in np.unique(ids) if v]
    images.append({"id": name, "file_name": f"{name}_leftImg8bit.png", "height": 16,
                   "width": 32})
    annotations.append({"image_id": name, "file_name": png, "segments_info": segs})
  cats = [{"id": t if categories_use_train_id else i, "name": nm, "isthing": th}
          for i, t, nm, th, _ in cs.CITYSCAPES_CLASSES]
  with open(root / "gtFine" / f"cityscapes_panoptic_{split}.json", "w") as f:
    json.dump({"images": images, "annotations": annotations, "categories": cats}, f)


def test_cityscapes_conversion(tmp_path):
  _fake_tree(tmp_path / "cs")
  info = cs.convert_cityscapes(str(tmp_path / "cs"), "val", str(tmp_path / "out"), 2)
  assert info.num_classes == 19 and len(info.thing_train_ids) == 8
  assert info.label_divisor == 1000 and info.num_examples == {"val": 3}
  assert info.category_id_to_train_id[26] == 13 and info.category_id_to_train_id[33] == 18
  assert info.colors[13] == [0, 0, 142]
  records = list(tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(
      str(tmp_path / "out" / "val-*.tfrecord")))))
  assert len(records) == 3
  ex = tfrecord_format.parse_example(records[1])
  pan = ex["panoptic"].numpy()
  assert ex["image_id"].numpy() == NAMES[1].encode()
  assert pan[0, 0] == 10 * 1000 and pan[15, 0] == 0  # sky, road
  assert pan[8, 3] == 13 * 1000 + 1 and pan[8, 11] == 13 * 1000 + 2  # cars
  assert pan[8, 21] == 11 * 1000  # person crowd: thing class, instance 0
  assert pan[15, 30] == 255 * 1000  # void
  assert ex["image"].shape == (16, 32, 3)
  json_path = dump_tfrecord.dump(str(tmp_path / "out" / "val-*"), str(tmp_path / "dump"))
  dumped = json.load(open(json_path))
  crowd = [s for a in dumped["annotations"] for s in a["segments_info"] if s["iscrowd"]]
  assert len(crowd) == 3 and all(s["category_id"] == 24 for s in crowd)


def test_cityscapes_rejects_train_id_json(tmp_path):
  _fake_tree(tmp_path / "cs", categories_use_train_id=True)
  with pytest.raises(DataValidationError, match=r"cityscapes_panoptic_val\.json: category id 0"):
    cs.convert_cityscapes(str(tmp_path / "cs"), "val", str(tmp_path / "out"), 1)
