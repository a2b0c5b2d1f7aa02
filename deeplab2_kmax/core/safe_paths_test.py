"""Names read from data never lead outside their folder (converters, dump)."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data import converter
from data import dump_tfrecord
from data import make_synthetic
from data import tfrecord_format
from deeplab2_kmax.core.dataset_info import DatasetInfo


def test_inside_allows_subfolders_and_refuses_escapes(tmp_path):
  from deeplab2_kmax.core import safe_paths  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "data"
  (folder / "sub").mkdir(parents=True)
  (tmp_path / "outside").mkdir()
  os.symlink(tmp_path / "outside", folder / "link_out")
  assert safe_paths.inside(str(folder), "a.jpg", "x.json") == str(folder / "a.jpg")
  assert safe_paths.inside(str(folder), "sub/b.jpg", "x.json") == str(folder / "sub/b.jpg")
  assert safe_paths.inside(str(folder), "sub/../c.jpg", "x.json").endswith("c.jpg")
  for bad in ("../outside/secret.jpg", "../../etc/passwd", str(tmp_path / "abs.jpg"),
              "link_out/secret.jpg", "", ".", "sub/..", "a\0b", None, 3):
    with pytest.raises(safe_paths.PathOutsideFolderError, match=r"^x\.json: file name "):
      safe_paths.inside(str(folder), bad, "x.json")
  written = safe_paths.inside_for_writing(str(folder), "new/d.png", "r.tfrecord")
  assert os.path.isdir(folder / "new") and written == str(folder / "new/d.png")


def _synthetic(root, n=2):
  make_synthetic.write_split(str(root), "val", n, 0, 40)
  return (str(root / "val"), str(root / "annotations" / "panoptic_val.json"),
          str(root / "annotations" / "panoptic_val"))


def _edit(path, fn):
  obj = json.load(open(path))
  fn(obj)
  json.dump(obj, open(path, "w"))


@pytest.mark.parametrize("key,how", [("image", "relative"), ("image", "absolute"),
                                     ("panoptic", "relative"), ("panoptic", "absolute")])
def test_converter_refuses_names_outside_the_folders(tmp_path, key, how):
  image_dir, json_path, png_dir = _synthetic(tmp_path / "src")
  outside = tmp_path / "outside"
  outside.mkdir()
  folder = image_dir if key == "image" else png_dir
  name = "val_000001.jpg" if key == "image" else "val_000001.png"
  shutil.copy(os.path.join(folder, name), outside / ("secret" + name[-4:]))
  target = str(outside / ("secret" + name[-4:]))
  bad = os.path.relpath(target, folder) if how == "relative" else target

  def point_outside(obj):
    if key == "image":
      obj["images"][1]["file_name"] = bad
    else:
      obj["annotations"][1]["file_name"] = bad
  _edit(json_path, point_outside)
  with pytest.raises(ValueError, match=rf"^{re.escape(json_path)}: .*{re.escape(repr(bad))} is outside"):
    converter.convert_coco_panoptic(image_dir, json_path, png_dir, str(tmp_path / "out"),
                                    "val", 1)
  assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_converter_reads_images_in_subfolders(tmp_path):
  image_dir, json_path, png_dir = _synthetic(tmp_path / "src")
  os.makedirs(os.path.join(image_dir, "sub"))
  os.rename(os.path.join(image_dir, "val_000001.jpg"),
            os.path.join(image_dir, "sub", "val_000001.jpg"))
  _edit(json_path, lambda o: o["images"][1].update(file_name="sub/val_000001.jpg"))
  info = converter.convert_coco_panoptic(image_dir, json_path, png_dir,
                                         str(tmp_path / "out"), "val", 1)
  assert info.num_examples == {"val": 2}


def test_cityscapes_converter_refuses_names_outside(tmp_path):
  from data import build_cityscapes_tfrecord_test as cs_test  # pylint: disable=g-import-not-at-top
  from data import build_cityscapes_tfrecord as cs  # pylint: disable=g-import-not-at-top
  root = tmp_path / "cs"
  cs_test._fake_tree(root)  # pylint: disable=protected-access
  json_path = str(root / "gtFine" / "cityscapes_panoptic_val.json")
  _edit(json_path, lambda o: o["images"][0].update(
      file_name="../../../../outside_000000_000019_leftImg8bit.png"))
  with pytest.raises(ValueError, match=rf"^{re.escape(json_path)}: .* is outside"):
    cs.convert_cityscapes(str(root), "val", str(tmp_path / "out"), 1)


def _record_file(path, file_name, image_id):
  png = tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)).numpy()
  with tf.io.TFRecordWriter(str(path)) as writer:
    writer.write(tfrecord_format.make_example(
        png, "png", 4, 4, image_id, file_name, png).SerializeToString())
  DatasetInfo.from_coco_categories("toy", [{"id": 1, "name": "a"}], 256, 255).save(
      str(path.parent))


@pytest.mark.parametrize("file_name,image_id", [
    ("../../../escaped.png", "1"), ("{abs}", "2"), ("", "../../../escaped"),
    ("", "{abs}")])
def test_dump_refuses_record_names_outside_the_output(tmp_path, file_name, image_id):
  target = str(tmp_path / "escaped")
  file_name = file_name.replace("{abs}", target + ".png")
  image_id = image_id.replace("{abs}", target)
  (tmp_path / "rec").mkdir()
  _record_file(tmp_path / "rec" / "val-00000-of-00001.tfrecord", file_name, image_id)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(ValueError, match=r"val-00000-of-00001\.tfrecord: .* is outside"):
    dump_tfrecord.dump(str(tmp_path / "rec" / "val-*"), str(tmp_path / "out" / "dump"))
  assert not os.path.exists(target + ".png") and not os.path.exists(target + ".jpg")
  assert sorted(os.listdir(tmp_path)) == sorted(before + ["out"])


def test_dump_writes_subfolder_names_inside(tmp_path):
  (tmp_path / "rec").mkdir()
  _record_file(tmp_path / "rec" / "val-00000-of-00001.tfrecord", "sub/a.png", "7")
  dump_tfrecord.dump(str(tmp_path / "rec" / "val-*"), str(tmp_path / "out"))
  assert (tmp_path / "out" / "images" / "sub" / "a.png").exists()
  assert (tmp_path / "out" / "panoptic" / "sub" / "a.png").exists()
