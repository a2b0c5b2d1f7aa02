"""Synthetic dataset: deterministic, valid COCO panoptic, with stuff/things/crowd/void."""
import json
import os

import numpy as np

from data import make_synthetic
from data import panoptic_io


def _files(root):
  out = {}
  for d, _, names in os.walk(root):
    for n in names:
      out[os.path.relpath(os.path.join(d, n), root)] = open(os.path.join(d, n), "rb").read()
  return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
  for name, seed in (("a", 4), ("b", 4), ("c", 5)):
    make_synthetic.make_dataset(str(tmp_path / name), 2, 1, seed, image_size=40)
  a, b, c = (_files(tmp_path / n) for n in "abc")
  assert a == b and len(a) == 2 * 3 + 2
  assert a["train/train_000000.jpg"] != c["train/train_000000.jpg"]


def test_scenes_are_valid_and_varied(tmp_path):
  paths = make_synthetic.make_dataset(str(tmp_path), 0, 24, 0, image_size=64)
  obj = json.load(open(paths["val"]))
  cats = {c["id"]: c for c in obj["categories"]}
  assert sorted(cats) == [2, 5, 9, 17, 23, 41]  # non-contiguous like COCO
  stats = {"crowd": 0, "void": 0, "things": 0, "stuff": set(), "thing_cats": set()}
  for ann in obj["annotations"]:
    ids = panoptic_io.read_panoptic_png(
        os.path.join(tmp_path, "annotations", "panoptic_val", ann["file_name"]))
    assert ids.shape == (64, 64)
    listed = {s["id"] for s in ann["segments_info"]}
    assert listed == set(np.unique(ids).tolist()) - {0}
    for s in ann["segments_info"]:
      assert (ids == s["id"]).sum() == s["area"] > 0
      if cats[s["category_id"]]["isthing"] and not s["iscrowd"]:
        stats["things"] += 1
        stats["thing_cats"].add(s["category_id"])
        x0, y0, w, h = s["bbox"]
        assert max(w, h) >= 0.15 * 64  # objects are not tiny
      elif not cats[s["category_id"]]["isthing"]:
        stats["stuff"].add(s["category_id"])
      stats["crowd"] += s["iscrowd"]
    void = (ids == 0).mean()
    assert void < 0.1
    stats["void"] += void > 0
  assert stats["crowd"] >= 2 and stats["void"] >= 5 and stats["things"] >= 24
  assert stats["stuff"] == {17, 23, 41} and stats["thing_cats"] == {2, 5, 9}
