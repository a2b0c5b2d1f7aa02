"""Converters: no mixed conversions in one folder, faithful non-8-bit images, ids kept
as they were, damaged records named."""
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import converter
from data import dump_tfrecord
from data import make_synthetic
from data import panoptic_io
from data import tfrecord_format


def _source(root, n=4, size=40, seed=0):
  make_synthetic.write_split(str(root), "val", n, seed, size)
  return dict(image_dir=str(root / "val"),
              panoptic_json=str(root / "annotations" / "panoptic_val.json"),
              panoptic_dir=str(root / "annotations" / "panoptic_val"))


def _convert(src, out, num_shards=2, **kwargs):
  return converter.convert_coco_panoptic(src["image_dir"], src["panoptic_json"],
                                         src["panoptic_dir"], str(out), "val", num_shards,
                                         **kwargs)


def _files(out):
  return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(f"{out}/*"))}


def test_rerun_with_other_shard_count_is_refused_then_replaced(tmp_path):
  src = _source(tmp_path / "src")
  out = tmp_path / "out"
  _convert(src, out, num_shards=2)
  before = _files(out)
  with pytest.raises(ValueError, match=r"^--output_dir=.*out: holds another conversion of "
                     r"split 'val' \(num_shards 2 -> 3\).*--overwrite"):
    _convert(src, out, num_shards=3)
  assert _files(out) == before                      # nothing touched
  _convert(src, out, num_shards=3, overwrite=True)  # replaces it completely
  shards = sorted(glob.glob(str(out / "val-*")))
  assert [os.path.basename(p) for p in shards] == [
      f"val-0000{i}-of-00003.tfrecord" for i in range(3)]
  record = json.load(open(out / "conversion_val.json"))
  assert record["num_shards"] == 3 and record["num_examples"] == 4
  assert record["source_sha256"] == converter.file_sha256(src["panoptic_json"])


def test_rerun_with_changed_json_is_refused(tmp_path):
  src = _source(tmp_path / "src")
  out = tmp_path / "out"
  _convert(src, out)
  before = _files(out)
  obj = json.load(open(src["panoptic_json"]))
  obj["annotations"] = obj["annotations"][:3]
  json.dump(obj, open(src["panoptic_json"], "w"))
  with pytest.raises(ValueError, match=r"holds another conversion of split 'val' "
                     r"\(.*source_sha256 [0-9a-f]{12}.* -> [0-9a-f]{12}"):
    _convert(src, out)
  assert _files(out) == before
  # the same command twice is a resume, not a conflict
  _convert(src, out, overwrite=True)
  info = _convert(src, out)
  assert info.num_examples == {"val": 3}


def test_shards_without_a_record_are_not_mixed_in(tmp_path):
  src = _source(tmp_path / "src")
  out = tmp_path / "out"
  out.mkdir()
  (out / "val-00000-of-00005.tfrecord").write_bytes(b"foreign")
  with pytest.raises(ValueError, match=r"val-00000-of-00005\.tfrecord"):
    _convert(src, out)
  assert (out / "val-00000-of-00005.tfrecord").read_bytes() == b"foreign"


def test_sixteen_bit_images_are_converted_faithfully(tmp_path):
  src = _source(tmp_path / "src", n=2)
  gray16 = (np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16)
  rgb16 = np.stack([gray16, gray16[::-1], gray16[:, ::-1]], -1)
  paths = [os.path.join(src["image_dir"], f"val_00000{i}.jpg") for i in range(2)]
  Image.fromarray(gray16).save(paths[0], format="PNG")              # mode I;16
  with open(paths[1], "wb") as f:
    f.write(tf.io.encode_png(rgb16).numpy())                         # 48-bit RGB
  _convert(src, tmp_path / "out", num_shards=1)
  record = glob.glob(str(tmp_path / "out" / "val-*"))[0]
  images = [tfrecord_format.parse_example(r)["image"].numpy()
            for r in tf.data.TFRecordDataset(record)]
  np.testing.assert_array_equal(images[0], np.repeat((gray16 >> 8)[..., None], 3, -1))
  np.testing.assert_array_equal(images[1], (rgb16 >> 8).astype(np.uint8))
  assert images[0].max() < 255 and len(np.unique(images[0])) > 100  # not solid white


def test_float_image_is_refused_naming_the_file(tmp_path):
  path = tmp_path / "x.tif"
  Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
  with pytest.raises(panoptic_io.DataValidationError, match=r"x\.tif: "):
    panoptic_io.read_image(str(path))


def test_sixteen_bit_panoptic_png_is_refused_clearly(tmp_path):
  src = _source(tmp_path / "src", n=2)
  png = os.path.join(src["panoptic_dir"], "val_000001.png")
  ids = panoptic_io.read_panoptic_png(png)
  Image.fromarray(ids.astype(np.uint16)).save(png)
  with pytest.raises(panoptic_io.DataValidationError,
                     match=r"val_000001\.png: 16-bit PNG; a panoptic PNG must be 8-bit RGB"):
    _convert(src, tmp_path / "out", num_shards=1)


def test_dump_gives_back_ids_as_they_were(tmp_path):
  src = _source(tmp_path / "src", n=3)
  obj = json.load(open(src["panoptic_json"]))
  # one string id besides the COCO-style ints
  obj["images"][2]["id"] = obj["annotations"][2]["image_id"] = "0042"
  json.dump(obj, open(src["panoptic_json"], "w"))
  _convert(src, tmp_path / "out", num_shards=1)
  dumped = json.load(open(dump_tfrecord.dump(str(tmp_path / "out" / "val-*"),
                                             str(tmp_path / "dump"))))
  assert [im["id"] for im in dumped["images"]] == [im["id"] for im in obj["images"]]
  assert [a["image_id"] for a in dumped["annotations"]] == [0, 1, "0042"]


def test_damaged_tfrecord_is_named(tmp_path):
  src = _source(tmp_path / "src", n=4)
  _convert(src, tmp_path / "out", num_shards=2)
  shard = tmp_path / "out" / "val-00001-of-00002.tfrecord"
  data = shard.read_bytes()
  shard.write_bytes(data[:len(data) // 2 + 20])
  with pytest.raises(ValueError, match=r"val-00001-of-00002\.tfrecord: corrupt or truncated"):
    dump_tfrecord.dump(str(tmp_path / "out" / "val-*"), str(tmp_path / "dump"))
  files = sorted(glob.glob(str(tmp_path / "out" / "val-*")))
  assert "val-00001-of-00002.tfrecord: corrupt" in tfrecord_format.locate_corruption(files)
