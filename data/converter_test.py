"""Converter: convert -> dump round trip, validation errors, resume, determinism, CLI."""
import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data import converter
from data import dump_tfrecord
from data import make_synthetic
from data import panoptic_io
from data.panoptic_io import DataValidationError
from deeplab2_kmax.core.dataset_info import DatasetInfo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make(root, n=6, size=48, seed=3):
  make_synthetic.write_split(str(root), "val", n, seed, size)
  return dict(image_dir=str(root / "val"),
              panoptic_json=str(root / "annotations" / "panoptic_val.json"),
              panoptic_dir=str(root / "annotations" / "panoptic_val"))


def _convert(src, out, num_shards=2, num_workers=1, split="val"):
  return converter.convert_coco_panoptic(src["image_dir"], src["panoptic_json"],
                                         src["panoptic_dir"], str(out), split, num_shards,
                                         num_workers, dataset_name="synthetic")


def _shard_bytes(out):
  return {os.path.basename(p): open(p, "rb").read()
          for p in sorted(glob.glob(str(out / "*.tfrecord")))}


def _category_and_partition(png_path, segments):
  """Per-pixel category id (0 void) and segment key (crowd merged per category)."""
  ids = panoptic_io.read_panoptic_png(png_path)
  by_id = {s["id"]: s for s in segments}
  cat = np.zeros(ids.shape, np.int64)
  key = np.zeros(ids.shape, np.int64)
  for sid, s in by_id.items():
    m = ids == sid
    cat[m] = s["category_id"]
    key[m] = -s["category_id"] if s["iscrowd"] else sid
  return cat, key


def _same_partition(a, b):
  pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
  return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  root = tmp_path_factory.mktemp("syn")
  return root, _make(root)


def test_round_trip_is_exact(synthetic, tmp_path):
  root, src = synthetic
  info = _convert(src, tmp_path / "rec")
  assert info.num_examples == {"val": 6}
  assert DatasetInfo.load(str(tmp_path / "rec")) == info
  json_path = dump_tfrecord.dump(str(tmp_path / "rec" / "val-*.tfrecord"),
                                 str(tmp_path / "dump"))
  orig = json.load(open(src["panoptic_json"]))
  dumped = json.load(open(json_path))
  assert sorted(c["id"] for c in dumped["categories"]) == [2, 5, 9, 17, 23, 41]
  dumped_ann = {a["image_id"]: a for a in dumped["annotations"]}
  assert len(dumped_ann) == len(orig["annotations"]) == 6
  crowd_seen = 0
  for ann in orig["annotations"]:
    d = dumped_ann[ann["image_id"]]  # ints stay ints
    cat_a, key_a = _category_and_partition(
        os.path.join(src["panoptic_dir"], ann["file_name"]), ann["segments_info"])
    cat_b, key_b = _category_and_partition(
        str(tmp_path / "dump" / "panoptic" / d["file_name"]), d["segments_info"])
    np.testing.assert_array_equal(cat_a, cat_b)
    assert _same_partition(key_a, key_b)
    crowd_a = sorted(s["category_id"] for s in ann["segments_info"] if s["iscrowd"])
    crowd_b = sorted(s["category_id"] for s in d["segments_info"] if s["iscrowd"])
    assert crowd_a == crowd_b
    crowd_seen += len(crowd_a)
    areas = {s["id"]: s["area"] for s in d["segments_info"]}
    ids_b = panoptic_io.read_panoptic_png(str(tmp_path / "dump" / "panoptic" / d["file_name"]))
    assert all((ids_b == i).sum() == a for i, a in areas.items())
    image_name = ann["file_name"].replace(".png", ".jpg")
    assert (open(os.path.join(src["image_dir"], image_name), "rb").read()
            == open(tmp_path / "dump" / "images" / image_name, "rb").read())
  assert crowd_seen + sum((panoptic_io.read_panoptic_png(p) == 0).any() for p in glob.glob(
      os.path.join(src["panoptic_dir"], "*.png"))) > 0  # crowd/void exercised


def test_internal_encoding_of_one_image(tmp_path):
  spec = panoptic_io.LabelSpec({2: 0, 17: 1}, frozenset({0}), 256, 255)
  ids = np.array([[0, 7, 7], [9, 9, 11], [12, 12, 11]])
  segs = [{"id": 9, "category_id": 2}, {"id": 7, "category_id": 17},
          {"id": 11, "category_id": 2}, {"id": 12, "category_id": 2, "iscrowd": 1}]
  out = panoptic_io.coco_to_internal(ids, segs, spec, "x.png")
  np.testing.assert_array_equal(out, [[255 * 256, 256, 256], [1, 1, 2], [0, 0, 2]])


def _error(src, out, match):
  with pytest.raises(DataValidationError, match=match):
    _convert(src, out, num_shards=1)


def _edit_json(src, fn):
  obj = json.load(open(src["panoptic_json"]))
  fn(obj)
  json.dump(obj, open(src["panoptic_json"], "w"))


def test_validation_errors_name_the_file(tmp_path):
  def fresh(name):
    return _make(tmp_path / name, n=2, size=40)

  src = fresh("corrupt_image")
  open(os.path.join(src["image_dir"], "val_000001.jpg"), "wb").write(b"\xff\xd8garbage")
  _error(src, tmp_path / "o1", r"val_000001\.jpg: unreadable or corrupt image")

  src = fresh("corrupt_png")
  open(os.path.join(src["panoptic_dir"], "val_000000.png"), "wb").write(b"\x89PNG\r\n")
  _error(src, tmp_path / "o2", r"val_000000\.png: unreadable or corrupt")

  src = fresh("size")
  png = os.path.join(src["panoptic_dir"], "val_000001.png")
  Image.open(png).crop((0, 0, 40, 39)).save(png)
  _error(src, tmp_path / "o3", r"val_000001\.png: PNG size 40x39 .* != image size 40x40")

  src = fresh("png_id")
  dropped = {}
  def drop(obj):
    dropped["id"] = obj["annotations"][1]["segments_info"].pop(0)["id"]
  _edit_json(src, drop)
  _error(src, tmp_path / "o4", rf"val_000001\.png: segment ids \[{dropped['id']}\] are in "
         "the PNG but not in the JSON")

  src = fresh("json_id")
  _edit_json(src, lambda o: o["annotations"][0]["segments_info"].append(
      {"id": 424242, "category_id": 2, "iscrowd": 0}))
  _error(src, tmp_path / "o5", r"val_000000\.png: segment 424242 .* in the JSON but not in "
         "the PNG")

  src = fresh("category")
  _edit_json(src, lambda o: o["annotations"][1]["segments_info"][0].update(category_id=999))
  _error(src, tmp_path / "o6", r"val_000001\.png: segment \d+ has unknown category_id 999")

  src = fresh("duplicate")
  _edit_json(src, lambda o: o["annotations"][0]["segments_info"].append(
      dict(o["annotations"][0]["segments_info"][0])))
  _error(src, tmp_path / "o7", r"val_000000\.png: duplicate segment id \d+")

  src = fresh("missing_image")
  os.remove(os.path.join(src["image_dir"], "val_000000.jpg"))
  _error(src, tmp_path / "o8", r"val_000000\.jpg: cannot read image")
  # A failed conversion leaves no shard under a final name.
  assert not glob.glob(str(tmp_path / "o*" / "*.tfrecord*"))


def test_interrupted_conversion_resumes(synthetic, tmp_path, monkeypatch):
  _, src = synthetic
  _convert(src, tmp_path / "ref", num_shards=3)
  reference = _shard_bytes(tmp_path / "ref")
  assert len(reference) == 3
  out = tmp_path / "out"
  real_read = panoptic_io.read_image
  calls = []

  def crash_on_fourth(path):
    calls.append(path)
    if len(calls) == 4:
      raise KeyboardInterrupt("simulated crash")
    return real_read(path)

  monkeypatch.setattr(panoptic_io, "read_image", crash_on_fourth)
  with pytest.raises(KeyboardInterrupt):
    _convert(src, out, num_shards=3)
  # Shard 0 (examples 0-1) is complete; shard 1 crashed mid-way: no final file, no temp.
  assert sorted(os.listdir(out)) == ["conversion_val.json", "val-00000-of-00003.tfrecord"]
  open(out / "val-00001-of-00003.tfrecord.tmp", "wb").write(b"truncated leftover")
  calls.clear()
  monkeypatch.setattr(panoptic_io, "read_image", lambda p: calls.append(p) or real_read(p))
  _convert(src, out, num_shards=3)
  assert len(calls) == 4  # the 2 examples of shard 0 were skipped
  assert _shard_bytes(out) == reference
  assert not glob.glob(str(out / "*.tmp"))


def test_cli_parallel_output_is_deterministic(synthetic, tmp_path):
  _, src = synthetic
  _convert(src, tmp_path / "serial", num_shards=2, num_workers=1)
  cmd = [sys.executable, os.path.join(REPO, "data", "build_coco_tfrecord.py"),
         f"--image_dir={src['image_dir']}", f"--panoptic_json={src['panoptic_json']}",
         f"--panoptic_dir={src['panoptic_dir']}", f"--output_dir={tmp_path / 'cli'}",
         "--split=val", "--num_shards=2", "--num_workers=2", "--dataset_name=synthetic"]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "wrote 6 val examples" in result.stdout
  assert _shard_bytes(tmp_path / "cli") == _shard_bytes(tmp_path / "serial")
  assert (open(tmp_path / "cli" / "dataset_info.json").read()
          == open(tmp_path / "serial" / "dataset_info.json").read())


def test_dataset_info_merges_splits_and_rejects_other_categories(synthetic, tmp_path):
  root, src = synthetic
  _convert(src, tmp_path / "rec", num_shards=1, split="val")
  info = _convert(src, tmp_path / "rec", num_shards=1, split="train")
  assert info.num_examples == {"train": 6, "val": 6}
  other = _make(tmp_path / "other", n=1, size=40)
  _edit_json(other, lambda o: o["categories"].append({"id": 99, "name": "x", "isthing": 0}))
  with pytest.raises(DataValidationError, match="different categories"):
    _convert(other, tmp_path / "rec", num_shards=1)


def test_cmyk_jpeg_is_stored_as_rgb_png(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 255, (8, 10, 3), dtype=np.uint8)
  Image.fromarray(rgb).convert("CMYK").save(tmp_path / "x.jpg", quality=100)
  data, fmt, h, w = panoptic_io.read_image(str(tmp_path / "x.jpg"))
  assert (fmt, h, w) == ("png", 8, 10)
  expected = np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB"))
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), expected)
