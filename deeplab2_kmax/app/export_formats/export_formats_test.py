"""A tiny real kMaX checkpoint exported to all four formats through the CLI, each
artifact verified in its own runtime (onnxruntime, the LiteRT interpreter, OpenVINO's
CPU plugin) against the Python path and compared with the SavedModel on demo-like
synthetic val images; `predict --model=FILE` on a folder of them."""

import contextlib
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.app import configs, export, predict
from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app.export_test import run_cli, write_tiny_checkpoint
from deeplab2_kmax.app.export_formats import artifacts, runtimes
from deeplab2_kmax.app.export_formats.artifact_predictor import ArtifactPredictor
from deeplab2_kmax.app.export_formats.verify import panoptic_agreement

SIZE = 129
TINY_CONFIG = os.path.join(configs.REPO_ROOT, "configs", "synthetic", "kmax_tiny.gin")
NUM_IMAGES = 4
RUNTIMES = {"onnx": "onnxruntime", "litert": "ai_edge_litert", "openvino": "openvino"}


def _demo_images(n=NUM_IMAGES, size=128):
  """Scenes of the demo's synthetic dataset (`data/make_synthetic.py`)."""
  from data.make_synthetic import render_scene
  return [render_scene(np.random.default_rng([7, i]), size)[0] for i in range(n)]


def _write_split(folder, images):
  from data import tfrecord_format
  os.makedirs(os.path.join(folder, "images"), exist_ok=True)
  record = os.path.join(folder, "val-00000-of-00001.tfrecord")
  with tf.io.TFRecordWriter(record) as writer:
    for i, image in enumerate(images):
      png = tf.io.encode_png(image).numpy()
      with open(os.path.join(folder, "images", f"val_{i}.png"), "wb") as f:
        f.write(png)
      label = tf.io.encode_png(np.zeros(image.shape, np.uint8)).numpy()
      writer.write(tfrecord_format.make_example(
          png, "png", image.shape[0], image.shape[1], i, f"val_{i}.png",
          label).SerializeToString())
  return record


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """Runs the export CLI once with every format whose runtime is installed (CI: all)."""
  folder = tmp_path_factory.mktemp("export_formats")
  gin_path, prefix, info_path = write_tiny_checkpoint(folder)
  record = _write_split(str(folder), _demo_images())
  formats = ["saved_model"] + [f for f, m in RUNTIMES.items() if runtimes.available(m)]
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    path = run_cli(export, [f"--gin_file={gin_path}", f"--checkpoint={prefix}",
                            f"--dataset_info={info_path}", f"--output_dir={folder / 'out'}",
                            f"--input_size={SIZE},{SIZE}", f"--format={','.join(formats)}",
                            f"--verify_tfrecord={record}"])
  lines = [json.loads(t) for t in stdout.getvalue().splitlines() if t.startswith("{")]
  predictor = predictor_lib.load_predictor([gin_path], [], prefix, info_path, (SIZE, SIZE))
  import gin
  with gin.unlock_config():
    gin.clear_config()  # the tiny config's permissive merger must not leak into other tests
  loaded = tf.saved_model.load(path)
  return {"folder": folder, "saved_model": path, "lines": {l["format"]: l for l in lines},
          "formats": formats, "predictor": predictor, "record": record,
          "serve_images": loaded.signatures["serve_images"], "loaded": loaded}


def _artifact(exported, fmt):
  if fmt not in exported["formats"]:
    pytest.skip(f"{RUNTIMES[fmt]} is not installed")
  return exported["lines"][fmt]["path"]


@pytest.mark.slow  # converts a tiny model three times: ~80 s on 2 cores
def test_cli_prints_one_json_line_per_artifact(exported):
  lines = exported["lines"]
  assert list(lines) == exported["formats"]
  assert lines["saved_model"]["path"] == exported["saved_model"]
  for fmt, line in lines.items():
    assert set(line) >= {"format", "path", "bytes", "verified_images"}
    assert line["verified_images"] == NUM_IMAGES
    assert line["bytes"] == artifacts.artifact_bytes(line["path"]) > 100_000
    if fmt != "saved_model":
      assert line["path"] == str(exported["folder"] / "out" / fmt / "1" /
                                 artifacts.MODULES[fmt].FILE_NAME)
      assert line["min_agreement"] >= 0.995 and line["input_size"] == [SIZE, SIZE]
      assert os.path.exists(os.path.join(os.path.dirname(line["path"]), "dataset_info.json"))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(RUNTIMES))
def test_artifact_agrees_with_the_saved_model(exported, fmt):
  """Each runtime on the demo-like images (128², padded to the 129² export size by
  image_size) against the SavedModel's serve_images: >= 99.5% agreement per image;
  with a tiny model and float32 everywhere they are in fact identical."""
  runner = artifacts.load_runner(_artifact(exported, fmt))
  assert runner.metadata["input_size"] == (SIZE, SIZE)
  assert runner.metadata["dataset_info"].names == ["person", "sky", "road"]
  artifact = ArtifactPredictor(runner)
  saved = exported["serve_images"]
  segments = 0
  for image in _demo_images():
    want = saved(images=tf.constant(image[None]))
    got = artifact.predict_image(image)
    assert got["panoptic"].shape == image.shape[:2]
    assert panoptic_agreement(got["panoptic"], want["panoptic_map"][0].numpy(), 256) >= 0.995
    np.testing.assert_array_equal(got["panoptic"], want["panoptic_map"][0].numpy())
    n = int(want["num_segments"][0])
    assert int(got["num_segments"]) == n
    np.testing.assert_array_equal(got["segment_ids"][:n], want["segment_ids"][0, :n])
    np.testing.assert_allclose(got["segment_scores"][:n], want["segment_scores"][0, :n],
                               rtol=1e-4)
    segments += n
  assert segments >= 2 * NUM_IMAGES  # the comparison covers real segments


@pytest.mark.slow
def test_batched_call_and_larger_images(exported):
  """A batch of different image sizes in one call equals one call per image; an image
  larger than the export size is shrunk on the host (uint8) and mapped back."""
  fmt = next(f for f in RUNTIMES if f in exported["formats"])
  runner = artifacts.load_runner(_artifact(exported, fmt))
  images = _demo_images(3)
  sizes = np.array([[128, 128], [100, 129], [129, 64]], np.int32)
  batch = np.zeros((3, SIZE, SIZE, 3), np.uint8)
  for i, (h, w) in enumerate(sizes):
    batch[i, :min(h, 128), :min(w, 128)] = images[i][:h, :w]
  together = runner(batch, sizes)
  for i in range(3):
    alone = runner(batch[i:i + 1], sizes[i:i + 1])
    for name, value in alone.items():
      np.testing.assert_allclose(together[name][i], value[0], rtol=1e-5, atol=1e-6)
  assert np.all(together["panoptic_map"][1, 100:] == 255 * 256)
  large = np.asarray(tf.image.resize(images[0], (200, 170)).numpy().round(), np.uint8)
  got = ArtifactPredictor(runner).predict_image(large)
  want = exported["predictor"].predict_image(large)
  assert got["panoptic"].shape == (200, 170)
  assert panoptic_agreement(got["panoptic"], want["panoptic"].numpy(), 256) > 0.9


@pytest.mark.slow
def test_predict_cli_runs_any_artifact_on_a_folder(exported, tmp_path):
  images = os.path.join(os.path.dirname(exported["record"]), "images", "*.png")
  want = predict.run(_predict_flags(["--saved_model=" + exported["saved_model"],
                                     f"--images={images}",
                                     f"--output_dir={tmp_path / 'saved_model'}"]))
  for fmt in RUNTIMES:
    if fmt not in exported["formats"]:
      continue
    out = tmp_path / fmt
    json_path = predict.run(_predict_flags([f"--model={exported['lines'][fmt]['path']}",
                                            f"--images={images}", f"--output_dir={out}"]))
    got, ref = json.load(open(json_path)), json.load(open(want))
    assert [a["file_name"] for a in got["annotations"]] == [
        a["file_name"] for a in ref["annotations"]]
    assert got["categories"] == ref["categories"]
    for png in glob.glob(str(out / "panoptic" / "*.png")):
      a = np.asarray(tf.io.decode_png(tf.io.read_file(png)))
      b = np.asarray(tf.io.decode_png(tf.io.read_file(
          png.replace(str(out), str(tmp_path / "saved_model")))))
      np.testing.assert_array_equal(a, b)
    assert len(glob.glob(str(out / "overlay" / "*.png"))) == NUM_IMAGES


def _predict_flags(argv):
  from absl import flags
  fv = flags.FlagValues()
  predict.define_flags(fv)
  fv(["predict"] + argv)
  return fv


# ------------------------------------------------------------------ fast unit tests
def test_parse_formats():
  assert artifacts.parse_formats("") == ["saved_model"]
  assert artifacts.parse_formats("onnx, LiteRT,onnx") == ["onnx", "litert"]
  with pytest.raises(ValueError, match="--format=.*tensorrt"):
    artifacts.parse_formats("onnx,tensorrt")


def test_missing_runtime_is_one_line_naming_the_package(monkeypatch):
  import importlib
  real = importlib.import_module

  def fake(name, *args):
    if name == "onnxruntime":
      raise ImportError("No module named 'onnxruntime'")
    return real(name, *args)

  monkeypatch.setattr(importlib, "import_module", fake)
  with pytest.raises(runtimes.MissingRuntime) as error:
    runtimes.require("onnxruntime")
  message = str(error.value)
  assert "\n" not in message and "pip install onnxruntime" in message
  assert "deeplab2-kmax[export]" in message
  assert not runtimes.available("onnxruntime")


def test_agreement_ignores_instance_numbering_and_counts_split_segments():
  a = np.zeros((10, 10), np.int64)
  a[:, 5:] = 1 * 256 + 1
  a[:2, :2] = 1 * 256 + 2
  b = np.where(a == 257, 258, np.where(a == 258, 257, a))  # instance ids swapped
  assert panoptic_agreement(a, b, 256) == 1.0
  c = a.copy()
  c[:, 8:] = 1 * 256 + 3  # the right segment split in two: its smaller part disagrees
  assert panoptic_agreement(c, a, 256) == pytest.approx(0.8)
  d = np.where(a == 0, 2 * 256, a)  # same segments, other class
  assert panoptic_agreement(d, a, 256) == pytest.approx(0.54)


def test_resolve_model_file(tmp_path):
  folder = tmp_path / "onnx"
  for version in ("1", "2"):
    os.makedirs(folder / version)
    (folder / version / "model.onnx").write_bytes(b"x")
  assert artifacts.resolve_model_file(str(folder)) == str(folder / "2" / "model.onnx")
  assert artifacts.resolve_model_file(str(folder / "1")) == str(folder / "1" / "model.onnx")
  with pytest.raises(ValueError, match="--model="):
    artifacts.resolve_model_file(str(tmp_path / "none"))
  (tmp_path / "x.pb").write_bytes(b"x")
  with pytest.raises(ValueError, match="not an exported artifact"):
    artifacts.resolve_model_file(str(tmp_path / "x.pb"))


def test_export_size_from_the_config():
  import gin
  from deeplab2_kmax.core import geometry
  from deeplab2_kmax.app.export_formats import export_command
  with gin.unlock_config():
    gin.clear_config()
    try:
      with pytest.raises(ValueError, match="--input_size"):
        export_command.export_size(None)
      gin.parse_config_files_and_bindings([TINY_CONFIG], [], skip_unknown=True)
      # the size export falls back to (load_predictor's default input size)
      assert geometry.eval_input_size() == (129, 129)
      assert export_command.export_size(geometry.eval_input_size()) == (129, 129)
      assert export_command.export_size((65, 97)) == (65, 97)
      with pytest.raises(ValueError, match="32k\\+1"):
        export_command.export_size((64, 64))
    finally:
      gin.clear_config()
