"""The three ways `predict` runs a model on an image file, one signature for all:
`fn(bytes, path) -> (uint8 image, prediction dict)` with the DatasetInfo that labels it.

* `checkpoint_runner`: gin config + checkpoint, the Python path (`PanopticPredictor`);
* `saved_model_runner`: an exported SavedModel, fed the file's bytes through
  `serving_default`, exactly what TF Serving receives;
* `file_runner`: an ONNX / LiteRT / OpenVINO artifact in its own runtime
  (`export_formats/artifact_predictor.py`).
"""
import numpy as np
import tensorflow as tf

from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app.saved_model import OUTPUT_NAMES, resolve_saved_model
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core.dataset_info import DatasetInfo
from deeplab2_kmax.app.export_formats import artifacts
from deeplab2_kmax.app.export_formats.artifact_predictor import ArtifactPredictor


def decode_image(data: bytes, path: str) -> np.ndarray:
  """The decoding every path uses (3 channels, first frame), naming the file on error."""
  try:
    return predictor_lib.decode_image(data).numpy()
  except tf.errors.InvalidArgumentError as e:
    raise UserError(f"{path}: not a decodable image ({e.message.splitlines()[0]})") from e


def saved_model_runner(path: str):
  """-> (DatasetInfo from the model's assets, fn(bytes, path) -> (image, prediction))."""
  loaded = tf.saved_model.load(resolve_saved_model(path))
  info = DatasetInfo.load(loaded.dataset_info.asset_path.numpy().decode())
  serve = loaded.signatures["serving_default"]
  internal_names = {v: k for k, v in OUTPUT_NAMES.items()}

  def run(data: bytes, file_path: str):
    image = decode_image(data, file_path)
    out = serve(image_bytes=tf.constant([data]))
    return image, {internal_names[k]: v[0].numpy() for k, v in out.items()}

  run.keepalive = loaded  # the signature needs the loaded object alive
  return info, run


def checkpoint_runner(gin_files, gin_bindings, checkpoint, dataset_info, input_size):
  """-> (DatasetInfo, fn(bytes, path) -> (image, prediction)) through the Python path."""
  if not dataset_info:
    raise UserError("--dataset_info: required with --checkpoint")
  predictor = predictor_lib.load_predictor(gin_files, gin_bindings, checkpoint, dataset_info, input_size)
  info = DatasetInfo.load(dataset_info)

  def run(data: bytes, file_path: str):
    image = decode_image(data, file_path)
    return image, {k: v.numpy() for k, v in predictor.predict_image(image).items()}

  return info, run


def file_runner(path: str, **options):
  """For `predict --model=FILE`: -> (DatasetInfo from the artifact's metadata,
  fn(bytes, path) -> (image, prediction)), as saved_model_runner."""
  predictor = ArtifactPredictor(artifacts.load_runner(path, **options))

  def run(data: bytes, file_path: str):
    image = decode_image(data, file_path)
    return image, predictor.predict_image(image)

  return predictor.info, run
