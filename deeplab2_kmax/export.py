r"""Exports a trained kMaX-DeepLab checkpoint as a TF Serving SavedModel.

  python -m deeplab2_kmax.export --gin_file=CONFIG.gin --checkpoint=model_dir/ckpt-300 \
      --dataset_info=tfrecords/dataset_info.json --output_dir=export [--input_size=H,W] \
      [--verify_tfrecord='tfrecords/val-*.tfrecord']

writes `output_dir/<version>/` (version = `--version`, default the next free number,
starting at 1, as TF Serving expects) with two signatures:

* `serving_default`: `image_bytes` tf.string [batch] (JPEG / PNG / BMP / GIF, any size);
* `serve_images`: `images` uint8 [batch, H, W, 3].

Outputs: `panoptic_map`, `semantic_map`, `instance_map` int32 [batch, H, W]
(semantic * label_divisor + instance, at each image's original size; in a
`serving_default` batch of different sizes, maps are padded bottom/right with void up to
the largest image and `image_size` [batch, 2] tells each image's height and width),
`segment_ids` / `segment_classes` int32 and `segment_scores` float32 [batch, N] (padded
per image, the first `num_segments` entries are real), `num_segments` int32 [batch].
Classes are train ids; `category_ids[train_id]` gives the dataset's category id.

Label metadata travels with the model: `assets/dataset_info.json`, and the attributes
`label_divisor`, `ignore_label`, `num_classes`, `category_ids`, `category_names`,
`category_isthing`, `category_colors`, `input_size` (variables of the loaded object).
Every signature runs `inference.PanopticPredictor.predict_image`, the function the
Python path calls, so exported predictions equal the checkpoint's pixel for pixel;
`--verify_tfrecord` checks this on a split after exporting (and fails otherwise).
`--input_size` should be the config's eval crop size (`experiment_options.eval_crop_size`)
so the exported model sees the evaluation's input; without it each image is padded to
the next 32k+1 size.

`--format=saved_model,onnx,litert,openvino` (comma list, default saved_model) also
writes ONNX / LiteRT / OpenVINO artifacts with the mask-wise merging inside
(`export_formats/`), verified in their own runtimes with `--verify_tfrecord`; one JSON
line per artifact: {"format", "path", "bytes", "verified_images", ...}.
"""
import os
import re
import shutil
from typing import Optional

import tensorflow as tf

from deeplab2_kmax import inference

OUTPUT_NAMES = {"panoptic": "panoptic_map", "semantic": "semantic_map",
                "instance": "instance_map", "segment_ids": "segment_ids",
                "segment_classes": "segment_classes", "segment_scores": "segment_scores",
                "num_segments": "num_segments", "image_size": "image_size"}


class ServingModule(tf.Module):
  """What the SavedModel holds: the predictor (model variables), metadata, signatures."""

  def __init__(self, predictor: inference.PanopticPredictor, info, info_path: str):
    super().__init__(name="kmax_deeplab_serving")
    self.predictor = predictor
    self.dataset_info = tf.saved_model.Asset(info_path)
    constant = lambda value, dtype: tf.Variable(value, dtype=dtype, trainable=False)
    self.label_divisor = constant(info.label_divisor, tf.int32)
    self.ignore_label = constant(info.ignore_label, tf.int32)
    self.num_classes = constant(info.num_classes, tf.int32)
    self.category_ids = constant([c.id for c in info.categories], tf.int32)
    self.category_names = constant(info.names, tf.string)
    self.category_isthing = constant([c.isthing for c in info.categories], tf.int32)
    self.category_colors = constant(info.colors, tf.int32)
    self.input_size = constant(list(predictor.input_size or (0, 0)), tf.int32)

  @staticmethod
  def _rename(result):
    return {OUTPUT_NAMES[k]: v for k, v in result.items()}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
  def serve_bytes(self, image_bytes):
    return self._rename(self.predictor.predict_encoded(image_bytes))

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                              name="images")])
  def serve_images(self, images):
    return self._rename(self.predictor.predict_images(images))


def next_version(output_dir: str) -> int:
  """1 + the largest numeric sub-folder of `output_dir` (1 when there is none)."""
  versions = [int(n) for n in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])
              if re.fullmatch(r"\d+", n)]
  return max(versions, default=0) + 1


def export_saved_model(predictor: inference.PanopticPredictor, info, output_dir: str,
                       version: Optional[int] = None) -> str:
  """Writes `output_dir/<version>/` atomically (a temporary folder renamed at the end,
  so TF Serving never sees a half-written version). Returns the version folder."""
  from data.dataset_info import INFO_FILE_NAME

  if not output_dir:
    raise ValueError("--output_dir is required")
  version = next_version(output_dir) if version is None else int(version)
  if version < 1:
    raise ValueError(f"--version must be >= 1, got {version}")
  final = os.path.join(output_dir, str(version))
  if os.path.exists(final):
    raise ValueError(f"--output_dir={output_dir}: version {version} already exists "
                     f"({final}); pick another --version or leave it unset")
  staging = os.path.join(output_dir, f".staging-{version}-{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  info_path = info.save(os.path.join(staging, INFO_FILE_NAME))
  module = ServingModule(predictor, info, info_path)
  signatures = {"serving_default": module.serve_bytes.get_concrete_function(),
                "serve_images": module.serve_images.get_concrete_function()}
  saved = os.path.join(staging, "saved_model")
  tf.saved_model.save(module, saved, signatures=signatures)
  os.rename(saved, final)
  shutil.rmtree(staging)
  return final


def resolve_saved_model(path: str) -> str:
  """A SavedModel folder, or a TF Serving base folder (its highest numeric version)."""
  if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
    return path
  versions = [n for n in (os.listdir(path) if os.path.isdir(path) else [])
              if re.fullmatch(r"\d+", n)
              and tf.io.gfile.exists(os.path.join(path, n, "saved_model.pb"))]
  if not versions:
    raise ValueError(f"--saved_model={path}: neither a SavedModel (no saved_model.pb) "
                     "nor a folder of numbered SavedModel versions")
  return os.path.join(path, max(versions, key=int))


def verify_export(saved_model_dir: str, predictor: inference.PanopticPredictor,
                  tfrecord_pattern: str, max_examples: int = 0) -> dict:
  """Compares the SavedModel with the Python path on a TFRecord split (e.g. the eval
  split): `serving_default` on each record's encoded image bytes and `serve_images`
  on its decoded pixels against `predictor.predict_image`, every output, exactly.
  Returns counts; raises RuntimeError naming the first differing image."""
  from tqdm import tqdm
  from data import tfrecord_format

  files = tf.io.gfile.glob(tfrecord_pattern)
  if not files:
    raise ValueError(f"--verify_tfrecord={tfrecord_pattern}: matches no file")
  loaded = tf.saved_model.load(saved_model_dir)
  dataset = tf.data.TFRecordDataset(sorted(files))
  if max_examples:
    dataset = dataset.take(max_examples)
  spec = {tfrecord_format.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)}
  count = pixels = 0
  for serialized in tqdm(dataset, desc="verify export", unit="image"):
    example = tfrecord_format.parse_example(serialized)
    encoded = tf.io.parse_single_example(serialized, spec)[tfrecord_format.IMAGE_ENCODED]
    want = predictor.predict_image(example["image"])
    got = {"serving_default": loaded.signatures["serving_default"](
               image_bytes=encoded[tf.newaxis]),
           "serve_images": loaded.signatures["serve_images"](
               images=example["image"][tf.newaxis])}
    for signature, outputs in got.items():
      for key, name in OUTPUT_NAMES.items():
        if key == "image_size":
          continue
        same = outputs[name][0].numpy() == want[key].numpy()
        if not same.all():
          raise RuntimeError(
              f"export differs from the checkpoint's Python path: {signature} output "
              f"{name}, image {example['image_id'].numpy().decode()} "
              f"({int((~same).sum())} values)")
    count += 1
    pixels += int(tf.size(want["panoptic"]))
  return {"images": count, "pixels": pixels, "mismatched_pixels": 0}


def parse_input_size(text: Optional[str]):
  """'H,W' -> (H, W) (validated by inference.check_input_size); '' / None -> None."""
  if not text:
    return None
  try:
    values = [int(v) for v in text.split(",")]
  except ValueError as e:
    raise ValueError(f"--input_size must be H,W integers, got {text!r}") from e
  return inference.check_input_size(values)


def run(f) -> str:
  """The CLI on parsed flags `f` (an absl FlagValues with `define_flags` applied).
  Returns the SavedModel's path (else the first artifact's)."""
  import json
  from data.dataset_info import DatasetInfo
  from deeplab2_kmax.export_formats import artifacts, export_command

  info = DatasetInfo.load(f.dataset_info) if f.dataset_info else None
  if info is None:
    raise ValueError("--dataset_info is required (the converter's dataset_info.json)")
  formats = artifacts.parse_formats(f.format)
  others = [fmt for fmt in formats if fmt != artifacts.SAVED_MODEL]
  if others:
    export_command.import_config_configurables()  # the config's eval size
  predictor = inference.load_predictor(f.gin_file, f.gin_bindings, f.checkpoint, info,
                                       parse_input_size(f.input_size))
  path = None
  if artifacts.SAVED_MODEL in formats:
    path = export_saved_model(predictor, info, f.output_dir, f.version)
    print(f"exported SavedModel to {path}")
    result = None
    if f.verify_tfrecord:
      result = verify_export(path, predictor, f.verify_tfrecord, f.verify_max_examples)
      print(f"verified: {result['images']} images, {result['pixels']} pixels, every "
            "output equal to the checkpoint's Python path")
    print(json.dumps(export_command.record(artifacts.SAVED_MODEL, path, result)))
  if others:  # ONNX / LiteRT / OpenVINO: export_formats/export_command.py
    records = export_command.export_formats(
        others, predictor, info, f.output_dir, parse_input_size(f.input_size), f.version,
        f.verify_tfrecord, f.verify_max_examples)
    path = path or records[0]["path"]
  return path


def main(argv):
  del argv
  from absl import flags
  from deeplab2_kmax.export_formats.runtimes import MissingRuntime
  try:
    run(flags.FLAGS)
  except MissingRuntime as e:  # one line saying what to install
    raise SystemExit(str(e)) from None


def define_flags(flag_values=None):
  """Defines this CLI's flags on `flag_values` (default: absl's global FLAGS)."""
  from absl import flags
  on = {"flag_values": flag_values if flag_values is not None else flags.FLAGS}
  flags.DEFINE_multi_string("gin_file", [], "gin config(s) the checkpoint was trained with",
                            **on)
  flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings", **on)
  flags.DEFINE_string("checkpoint", "", "checkpoint prefix (model_dir/ckpt-300) or model_dir",
                      **on)
  flags.DEFINE_string("dataset_info", "", "the converter's dataset_info.json", **on)
  flags.DEFINE_string("output_dir", "", "TF Serving base folder; writes <output_dir>/<version>",
                      **on)
  flags.DEFINE_string("input_size", "", "optional H,W (32k+1): resize to fit + pad to this; "
                      "default: pad each image to the next 32k+1 size, no resizing", **on)
  flags.DEFINE_string("verify_tfrecord", "", "optional TFRecord glob (e.g. the eval split): "
                      "check the SavedModel against the Python path on it", **on)
  flags.DEFINE_integer("verify_max_examples", 0, "verify at most this many images (0: all)",
                       **on)
  flags.DEFINE_integer("version", None, "version folder number (default: next free, from 1)",
                       **on)
  flags.DEFINE_string("format", "saved_model", "comma list of saved_model, onnx, litert, "
                      "openvino; the last three (with the merge inside) go to "
                      "<output_dir>/<format>/<version>/ at --input_size (default: the "
                      "config's eval size)", **on)


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main)
