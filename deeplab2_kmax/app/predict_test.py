"""Tests for app/predict.py and app/runners.py: COCO panoptic files + overlays from a
equal those of the Python path."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab2_kmax.app import predict, runners, saved_model
from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app.export_test import _info
from deeplab2_kmax.app.predictor_test import D, IGNORE, permissive_merger, random_image, tiny_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  base = tmp_path_factory.mktemp("predict")
  predictor = predictor_lib.PanopticPredictor(tiny_model(), permissive_merger(), D, IGNORE)
  saved_model.export_saved_model(predictor, _info(), str(base / "serving"))
  images = base / "images"
  images.mkdir()
  Image.fromarray(random_image(40, 70, seed=1)).save(images / "a.png")
  Image.fromarray(random_image(65, 33, seed=2)).save(images / "b.jpg", quality=90)
  Image.fromarray(random_image(50, 50, seed=3)[..., 0]).save(images / "c.png")  # grey
  return predictor, base


def _read_ids(path):
  rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
  return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def test_saved_model_predictions_written_in_coco_format(setup):
  predictor, base = setup
  info, run = runners.saved_model_runner(str(base / "serving"))
  assert info.names == ["person", "sky", "road"]
  files = predict.list_images(str(base / "images" / "*"))
  out = base / "out_saved"
  json_path = predict.predict_files(info, run, files, str(out))
  with open(json_path) as f:
    coco = json.load(f)
  assert [a["file_name"] for a in coco["annotations"]] == ["a.png", "b.png", "c.png"]
  assert {c["id"] for c in coco["categories"]} == {5, 7, 9}
  for ann, size in zip(coco["annotations"], [(40, 70), (65, 33), (50, 50)]):
    ids = _read_ids(out / "panoptic" / ann["file_name"])
    assert ids.shape == size
    listed = {s["id"] for s in ann["segments_info"]}
    assert listed == set(np.unique(ids)) - {0} and listed
    for seg in ann["segments_info"]:
      assert seg["category_id"] in (5, 7, 9) and 0 <= seg["score"] <= 1
      assert seg["area"] == int((ids == seg["id"]).sum())
    with Image.open(out / "overlay" / ann["file_name"]) as overlay:
      assert overlay.size == (size[1], size[0]) and overlay.mode == "RGB"

  # The Python path writes the same PNGs.
  def python_run(data, path):
    image = runners.decode_image(data, path)
    return image, {k: v.numpy() for k, v in predictor.predict_image(image).items()}

  predict.predict_files(info, python_run, files, str(base / "out_python"))
  for name in ("a.png", "b.png", "c.png"):
    np.testing.assert_array_equal(_read_ids(out / "panoptic" / name),
                                  _read_ids(base / "out_python" / "panoptic" / name))


def test_panoptic_png_matches_internal_map(setup):
  predictor, base = setup
  image = random_image(40, 70, seed=1)
  pred = predictor.predict_image(image)
  ids = _read_ids(base / "out_saved" / "panoptic" / "a.png")
  panoptic = pred["panoptic"].numpy()
  np.testing.assert_array_equal(ids, np.where(panoptic // D == IGNORE, 0, panoptic + 1))


def test_bad_inputs_name_the_flag_or_file(tmp_path):
  with pytest.raises(ValueError, match="no file matches"):
    predict.list_images(str(tmp_path / "*.jpg"))
  Image.new("RGB", (4, 4)).save(tmp_path / "im.png")
  Image.new("RGB", (4, 4)).save(tmp_path / "im.jpg")
  with pytest.raises(ValueError, match="both be written as im.png"):
    predict.list_images(str(tmp_path / "im.*"))
  with pytest.raises(ValueError, match="broken.jpg: not a decodable image"):
    runners.decode_image(b"garbage", "broken.jpg")
  with pytest.raises(ValueError, match="--saved_model"):
    runners.saved_model_runner(str(tmp_path))


def test_cli_with_saved_model(setup, capsys):
  from deeplab2_kmax.app.export_test import run_cli
  _, base = setup
  out = base / "out_cli"
  json_path = run_cli(predict, [f"--saved_model={base / 'serving'}",
                                f"--images={base / 'images' / '*.png'}",
                                f"--output_dir={out}", "--overlay_scale=2"])
  with open(json_path) as f:
    coco = json.load(f)
  assert [a["file_name"] for a in coco["annotations"]] == ["a.png", "c.png"]
  assert sorted(os.listdir(out / "overlay")) == ["a.png", "c.png"]
  with Image.open(out / "overlay" / "a.png") as overlay:
    assert overlay.size == (140, 80)
  with pytest.raises(ValueError, match="pass one of them, not several"):
    run_cli(predict, ["--saved_model=x", "--checkpoint=y", "--images=z", "--output_dir=o"])
  with pytest.raises(ValueError, match="--input_size: fixed at export time"):
    run_cli(predict, [f"--saved_model={base / 'serving'}", "--input_size=65,65",
                      "--images=z", "--output_dir=o"])
  with pytest.raises(ValueError, match="pass --saved_model"):
    run_cli(predict, ["--images=z", "--output_dir=o"])
