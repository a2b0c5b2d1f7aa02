"""The TF Serving SavedModel of a PanopticPredictor: its module, the atomic versioned
write, finding a version, and the exact check against the Python path.

The SavedModel's two signatures run `PanopticPredictor.predict_encoded` /
`predict_images`, which call `predict_image`, the function of the Python path, so the
exported predictions equal the checkpoint's pixel for pixel; `verify_export` checks it
on a TFRecord split. Inputs, outputs and metadata: `python -m deeplab2_kmax.export`
(app/export.py).
"""
import contextlib
import itertools
import logging
import os
from typing import Optional

import tensorflow as tf
from tqdm import tqdm

from data import tfrecord_format
from deeplab2_kmax.app.export_formats.signature import OUTPUTS
from deeplab2_kmax.app.predictor import PanopticPredictor
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core.dataset_info import INFO_FILE_NAME
from deeplab2_kmax.core.versions import new_version, numbered

# The artifacts' output names, plus each image's size (batches of different sizes).
OUTPUT_NAMES = dict(OUTPUTS, image_size="image_size")


class ServingModule(tf.Module):
  """What the SavedModel holds: the predictor (model variables), metadata, signatures."""

  def __init__(self, predictor: PanopticPredictor, info, info_path: str):
    super().__init__(name="kmax_deeplab_serving")
    self.predictor = predictor
    self.dataset_info = tf.saved_model.Asset(info_path)
    constant = lambda value, dtype: tf.Variable(value, dtype=dtype, trainable=False)
    self.label_divisor = constant(info.label_divisor, tf.int32)
    self.ignore_label = constant(info.ignore_label, tf.int32)
    self.num_classes = constant(info.num_classes, tf.int32)
    self.category_ids = constant(info.category_ids, tf.int32)
    self.category_names = constant(info.names, tf.string)
    self.category_isthing = constant([c.isthing for c in info.categories], tf.int32)
    self.category_colors = constant(info.colors, tf.int32)
    self.input_size = constant(list(predictor.input_size or (0, 0)), tf.int32)
    self.max_image_pixels = constant(predictor.max_image_pixels, tf.int64)

  @staticmethod
  def _rename(result):
    return {OUTPUT_NAMES[k]: v for k, v in result.items()}

  # Shapes are checked at run time with a message stating the expected input (TF and
  # TF Serving do not enforce a signature's shape), so the specs leave them open.
  @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="image_bytes")])
  def serve_bytes(self, image_bytes):
    return self._rename(self.predictor.predict_encoded(image_bytes))

  @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
  def serve_images(self, images):
    return self._rename(self.predictor.predict_images(images))


class _NoRenamedInputsWall(logging.Filter):
  """Drops TensorFlow's info line listing every captured variable of a signature
  (thousands of numeric input names renamed `unknown_N`)."""

  def filter(self, record):
    return "with unsupported characters which will be renamed" not in record.getMessage()


@contextlib.contextmanager
def _quiet_signature_renames():
  logger = logging.getLogger("absl")
  wall = _NoRenamedInputsWall()
  logger.addFilter(wall)
  try:
    yield
  finally:
    logger.removeFilter(wall)


def export_saved_model(predictor: PanopticPredictor, info, output_dir: str,
                       version: Optional[int] = None) -> str:
  """Writes `output_dir/<version>/` atomically (a temporary folder renamed at the end,
  so TF Serving never sees a half-written version). Returns the version folder."""

  if not output_dir:
    raise UserError("--output_dir: required flag not set")
  with new_version(output_dir, version, f"--output_dir={output_dir}") as (staging, final):
    info_path = info.save(os.path.join(staging, INFO_FILE_NAME))
    module = ServingModule(predictor, info, info_path)
    signatures = {"serving_default": module.serve_bytes.get_concrete_function(),
                  "serve_images": module.serve_images.get_concrete_function()}
    saved = os.path.join(staging, "saved_model")
    with _quiet_signature_renames():
      tf.saved_model.save(module, saved, signatures=signatures)
    os.rename(saved, final)
  return final


def resolve_saved_model(path: str) -> str:
  """A SavedModel folder, or a TF Serving base folder (its highest numeric version)."""
  if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
    return path
  versions = [n for n in numbered(path)
              if tf.io.gfile.exists(os.path.join(path, str(n), "saved_model.pb"))]
  if not versions:
    raise UserError(f"--saved_model={path}: neither a SavedModel (no saved_model.pb) "
                    "nor a folder of numbered SavedModel versions")
  return os.path.join(path, str(versions[-1]))


def verify_export(saved_model_dir: str, predictor: PanopticPredictor,
                  tfrecord_pattern: str, max_examples: int = 0) -> dict:
  """Compares the SavedModel with the Python path on a TFRecord split (e.g. the eval
  split): `serving_default` on each record's encoded image bytes and `serve_images`
  on its decoded pixels against `predictor.predict_image`, every output, exactly.
  Returns counts; raises RuntimeError naming the first differing image."""
  # validate the pattern before loading the SavedModel
  records = tfrecord_format.read_split(tfrecord_pattern, max_examples)
  first = next(records, None)
  loaded = tf.saved_model.load(saved_model_dir)
  dataset = itertools.chain([first] if first is not None else [], records)
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
