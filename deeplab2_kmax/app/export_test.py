"""Export -> load in a process where the project is NOT importable -> outputs equal the
Python path (`PanopticPredictor.predict_image`) pixel for pixel."""
import json
import os
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.app import checkpoints, export, saved_model
from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.core import versions
from deeplab2_kmax.core.dataset_info import DatasetInfo
from deeplab2_kmax.app.predictor_test import D, IGNORE, permissive_merger, random_image, tiny_model

SIZES = [(33, 33), (40, 70), (71, 45), (97, 130)]

# Runs in a bare interpreter: -I (no user site, no PYTHONPATH, no cwd), -S (no site
# module, so the editable-install .pth hook that would make the repo importable never
# runs); only the venv's site-packages (TensorFlow) is put on sys.path.
CLIENT = r"""
import importlib, json, sys
sys.path[:0] = json.loads(sys.argv[1])
for name in ("deeplab2_kmax", "data", "evaluation", "trainer"):
  try:
    importlib.import_module(name)
  except ImportError:
    continue
  raise SystemExit(f"project module {name} is importable in the isolated process")
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[2])
inputs = np.load(sys.argv[3])
out = {}
for i, key in enumerate(sorted(k for k in inputs.files if k.startswith("png"))):
  res = model.signatures["serving_default"](image_bytes=tf.constant([inputs[key].tobytes()]))
  for name, value in res.items():
    out[f"bytes{i}_{name}"] = value.numpy()
  image = tf.io.decode_png(inputs[key].tobytes())
  res = model.signatures["serve_images"](images=image[tf.newaxis])
  for name, value in res.items():
    out[f"images{i}_{name}"] = value.numpy()
mixed = model.signatures["serving_default"](image_bytes=tf.constant(
    [inputs[k].tobytes() for k in sorted(k for k in inputs.files if k.startswith("png"))]))
for name, value in mixed.items():
  out[f"mixed_{name}"] = value.numpy()
try:
  model.signatures["serving_default"](image_bytes=tf.constant([b"\x89PNG garbage"]))
  out["malformed"] = np.array("no error")
except tf.errors.InvalidArgumentError as e:
  out["malformed"] = np.array("InvalidArgumentError")
meta = {"label_divisor": int(model.label_divisor.numpy()),
        "category_names": [n.decode() for n in model.category_names.numpy()],
        "category_ids": model.category_ids.numpy().tolist(),
        "asset": open(model.dataset_info.asset_path.numpy().decode()).read()}
out["meta"] = np.array(json.dumps(meta))
np.savez(sys.argv[4], **out)
"""


def _info():
  return DatasetInfo.from_coco_categories(
      "toy", [{"id": 5, "name": "person", "isthing": 1}, {"id": 7, "name": "sky"},
              {"id": 9, "name": "road"}], label_divisor=D, ignore_label=IGNORE)


def _isolated_python(args, cwd):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
  return subprocess.run([sys.executable, "-I", "-S", "-c", CLIENT, json.dumps(paths)] + args,
                        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  base = tmp_path_factory.mktemp("export")
  predictor = predictor_lib.PanopticPredictor(tiny_model(), permissive_merger(), D, IGNORE)
  path = saved_model.export_saved_model(predictor, _info(), str(base / "serving"))
  return predictor, path, base


def test_version_folders(exported, tmp_path):
  _, path, base = exported
  assert path == str(base / "serving" / "1")
  assert versions.next_version(str(base / "serving")) == 2
  assert saved_model.resolve_saved_model(str(base / "serving")) == path
  assert os.listdir(base / "serving") == ["1"]  # no staging leftovers
  with pytest.raises(ValueError, match="already exists"):
    saved_model.export_saved_model(exported[0], _info(), str(base / "serving"), version=1)
  with pytest.raises(ValueError, match="--saved_model"):
    saved_model.resolve_saved_model(str(tmp_path))


def test_isolated_load_equals_python_path(exported, tmp_path):
  predictor, path, _ = exported
  images = [random_image(h, w, seed=h + w) for h, w in SIZES]
  np.savez(tmp_path / "in.npz",
           **{f"png{i}": np.frombuffer(tf.io.encode_png(im).numpy(), np.uint8)
              for i, im in enumerate(images)})
  proc = _isolated_python([path, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = np.load(tmp_path / "out.npz")
  for i, image in enumerate(images):
    want = {k: v.numpy() for k, v in predictor.predict_image(image).items()}
    assert want["num_segments"] > 1  # the comparison covers real segments
    for sig in ("bytes", "images"):
      for key, name in saved_model.OUTPUT_NAMES.items():
        if key == "image_size":
          np.testing.assert_array_equal(out[f"{sig}{i}_{name}"], [image.shape[:2]])
          continue
        np.testing.assert_array_equal(out[f"{sig}{i}_{name}"][0], want[key],
                                      err_msg=f"{sig} {name} size {image.shape}")
    h, w = image.shape[:2]
    np.testing.assert_array_equal(out[f"mixed_panoptic_map"][i, :h, :w], want["panoptic"])
    assert np.all(out["mixed_panoptic_map"][i, h:] == IGNORE * D)
  assert out["mixed_panoptic_map"].shape == (4, 97, 130)
  assert str(out["malformed"]) == "InvalidArgumentError"
  meta = json.loads(str(out["meta"]))
  assert meta["label_divisor"] == D and meta["category_names"] == ["person", "sky", "road"]
  assert meta["category_ids"] == [5, 7, 9]
  assert json.loads(meta["asset"])["categories"][0]["name"] == "person"


def test_saved_model_cli_lists_signatures(exported):
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  proc = subprocess.run([cli, "show", "--all", "--dir", exported[1]], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for text in ("signature_def['serving_default']", "signature_def['serve_images']",
               "inputs['image_bytes']", "inputs['images']", "outputs['panoptic_map']",
               "outputs['num_segments']", "DT_UINT8", "DT_STRING"):
    assert text in proc.stdout


# ------------------------------------------------------------ the real model, via the CLI
TINY_GIN = """
build_model.backbone = "resnet50"
build_model.backbone_kwargs = {"depths": (1, 1, 1, 1), "width_multiplier": 0.125,
                               "stem_width_multiplier": 0.25}
build_model.num_queries = 16
build_model.pixel_decoder_dims = (16, 8, 8, 8)
build_model.axial_num_heads = 2
build_model.pixel_decoder_blocks = (1, 1, 1, 1)
build_model.decoder_layers = (1, 1, 1)
build_model.decoder_channels = 32
build_model.decoder_key_depth = 16
build_model.decoder_value_depth = 32
build_model.decoder_num_heads = 2
build_model.ffn_channels = 64
build_model.embedding_dim = 16
build_model.pixel_head_channels = 32
build_model.semantic_channels = 16
build_model.semantic_low_level_channels = (8, 8)
# An untrained model is not confident: keep every mask so that maps have segments.
MaskWiseMerger.thing_threshold = 0.0
MaskWiseMerger.stuff_threshold = 0.0
MaskWiseMerger.pixel_confidence = 0.34
MaskWiseMerger.thing_area_limit = 1
MaskWiseMerger.stuff_area_limit = 1
# Bindings of modules inference does not import are skipped.
train.num_steps = 3
"""


def write_tiny_checkpoint(folder):
  """A tiny real KMaXDeepLab checkpoint written as the trainer does (CheckpointManager,
  with a step). Returns (gin path, checkpoint prefix, dataset_info path)."""
  import gin
  from deeplab2_kmax import backbones  # noqa: F401  (gin configurables)
  from deeplab2_kmax.model import build_model

  folder = str(folder)
  gin_path = os.path.join(folder, "tiny.gin")
  with open(gin_path, "w") as f:
    f.write(TINY_GIN)
  os.makedirs(os.path.join(folder, "model"), exist_ok=True)
  info_path = _info().save(os.path.join(folder, "model"))
  gin.clear_config()
  gin.parse_config_files_and_bindings([gin_path], [], skip_unknown=True)
  model = build_model(num_classes=3)
  gin.clear_config()
  model(tf.zeros([1, 65, 65, 3]), training=False)
  # Every variable must be checkpointable (Keras 3 hides list-held layers from TF).
  assert checkpoints.untracked_variables(model) == []
  for v in model.variables:
    # A trained model's masks are confident (sharp mask logits); an untrained one's are
    # not and would give empty maps. Raise the learned temperature of the mask logits.
    if v.path.endswith("mask_logits_bn/gamma"):
      v.assign(tf.fill(v.shape, 30.0))
  ckpt = tf.train.Checkpoint(model=model, step=tf.Variable(3, dtype=tf.int64))
  prefix = tf.train.CheckpointManager(ckpt, os.path.join(folder, "model"), 2).save()
  return gin_path, prefix, info_path


def run_cli(module, argv):
  """Runs a CLI module's `run` on its own absl FlagValues (no global flag state)."""
  from absl import flags
  fv = flags.FlagValues()
  module.define_flags(fv)
  fv([module.__name__] + list(argv))
  return module.run(fv)


@pytest.mark.slow  # builds, checkpoints and exports a real (tiny) model: ~30 s on 2 cores
def test_export_cli_real_model_equals_python_path(tmp_path):
  from deeplab2_kmax.app.serving_safety_test import log_messages  # pylint: disable=g-import-not-at-top
  gin_path, prefix, info_path = write_tiny_checkpoint(tmp_path)
  with log_messages() as messages:
    path = run_cli(export, [f"--gin_file={gin_path}", f"--checkpoint={prefix}",
                            f"--dataset_info={info_path}", f"--output_dir={tmp_path / 's'}"])
  assert path == str(tmp_path / "s" / "1")
  assert messages and not [m for m in messages if "unknown_" in m or len(m) > 1000]
  loaded = tf.saved_model.load(path)
  predictor = predictor_lib.load_predictor([gin_path], [], prefix, info_path)
  for h, w in [(33, 33), (50, 70)]:
    image = random_image(h, w, seed=h * w)
    want = {k: v.numpy() for k, v in predictor.predict_image(image).items()}
    assert want["num_segments"] >= 2
    by_bytes = loaded.signatures["serving_default"](
        image_bytes=tf.constant([tf.io.encode_png(image).numpy()]))
    by_array = loaded.signatures["serve_images"](images=tf.constant(image[None]))
    for key, name in saved_model.OUTPUT_NAMES.items():
      if key != "image_size":
        np.testing.assert_array_equal(by_bytes[name][0].numpy(), want[key], err_msg=name)
        np.testing.assert_array_equal(by_array[name][0].numpy(), want[key], err_msg=name)


def test_cli_errors_name_the_flag(tmp_path):
  with pytest.raises(ValueError, match="--checkpoint=.*no such checkpoint"):
    checkpoints.resolve_checkpoint(str(tmp_path / "ckpt-1"))
  with pytest.raises(ValueError, match="--checkpoint=.*holds no checkpoint"):
    checkpoints.resolve_checkpoint(str(tmp_path))
  with pytest.raises(ValueError, match="--gin_file=.*no such file"):
    predictor_lib.load_predictor([str(tmp_path / "x.gin")], [], "ckpt", _info())


def test_verify_export_on_a_tfrecord_split(exported, tmp_path):
  from data import tfrecord_format
  predictor, path, _ = exported
  record = str(tmp_path / "val-00000-of-00001.tfrecord")
  with tf.io.TFRecordWriter(record) as writer:
    for i, (h, w) in enumerate([(40, 70), (57, 33)]):
      image = random_image(h, w, seed=i)
      label = tf.io.encode_png(np.zeros((h, w, 3), np.uint8)).numpy()
      writer.write(tfrecord_format.make_example(
          tf.io.encode_jpeg(image).numpy(), "jpeg", h, w, i, f"{i}.jpg",
          label).SerializeToString())
  result = saved_model.verify_export(path, predictor, str(tmp_path / "val-*"))
  assert result == {"images": 2, "pixels": 40 * 70 + 57 * 33, "mismatched_pixels": 0}
  assert saved_model.verify_export(path, predictor, record, max_examples=1)["images"] == 1
  other = predictor_lib.PanopticPredictor(tiny_model(seed=5), permissive_merger(), D, IGNORE)
  with pytest.raises(RuntimeError, match="differs from the checkpoint's Python path"):
    saved_model.verify_export(path, other, record)
  with pytest.raises(ValueError, match="--verify_tfrecord"):
    saved_model.verify_export(path, predictor, str(tmp_path / "none-*"))
