"""Exported signatures refuse bad requests saying what is wrong: the index of a bad
element, the expected input, the pixel limit; the export log has no input-name walls."""
import contextlib
import logging
import struct

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.app import export, input_checks, saved_model
from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app.export_test import _info
from deeplab2_kmax.app.predictor_test import D, IGNORE, permissive_merger, random_image, tiny_model

LIMIT = 48 * 48


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """(the loaded SavedModel of a tiny model with a small pixel limit, its export log)."""
  predictor = predictor_lib.PanopticPredictor(tiny_model(), permissive_merger(), D, IGNORE,
                                          max_image_pixels=LIMIT)
  with log_messages() as messages:
    path = saved_model.export_saved_model(predictor, _info(),
                                     str(tmp_path_factory.mktemp("s") / "serving"))
  return tf.saved_model.load(path), messages


@contextlib.contextmanager
def log_messages():
  """The messages absl logs (at INFO and above) inside the block."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  messages = []
  handler = logging.Handler()
  handler.emit = lambda record: messages.append(record.getMessage())
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  logging.getLogger("absl").addHandler(handler)
  try:
    yield messages
  finally:
    logging.getLogger("absl").removeHandler(handler)
    absl_logging.set_verbosity(verbosity)


def _png(h, w, seed=0):
  return tf.io.encode_png(random_image(h, w, seed=seed)).numpy()


def _refused(call, pattern):
  with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
    call()


def test_bad_element_of_a_batch_is_named_by_index(served):
  model, _ = served
  serve = model.signatures["serving_default"]
  good = _png(33, 33)
  _refused(lambda: serve(image_bytes=tf.constant([good, b"\x89PNG garbage", good])),
           r"image_bytes\[1\]: not a decodable JPEG, PNG, BMP or GIF image")
  _refused(lambda: serve(image_bytes=tf.constant([good, good, good[:len(good) // 2]])),
           r"image_bytes\[2\]: not a decodable")
  _refused(lambda: serve(image_bytes=tf.constant(good)),
           r"image_bytes: expected a 1-D string tensor \[batch\] of encoded images, got "
           r"shape \[\]")
  _refused(lambda: serve(image_bytes=tf.constant([], tf.string)), "empty request")
  assert int(serve(image_bytes=tf.constant([good, good]))["num_segments"].shape[0]) == 2


def test_wrong_dtype_rank_or_channels_state_the_expected_input(served):
  model, _ = served
  serve = model.signatures["serve_images"]
  expected = r"images: expected uint8 \[batch, height, width, 3\] \(RGB\), got shape "
  _refused(lambda: serve(images=tf.zeros([33, 33, 3], tf.uint8)), expected + r"\[33 33 3\]")
  _refused(lambda: serve(images=tf.zeros([1, 33, 33, 4], tf.uint8)),
           expected + r"\[1 33 33 4\]")
  _refused(lambda: serve(images=tf.zeros([1, 33, 33], tf.uint8)), expected + r"\[1 33 33\]")
  with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
    serve(images=tf.zeros([1, 33, 33, 3], tf.float32))
  out = serve(images=tf.constant(random_image(33, 33)[None]))
  assert out["panoptic_map"].shape == (1, 33, 33)


def _forged_png_size(data, height, width):
  """The PNG bytes with another size in IHDR (nothing is decoded before the check)."""
  return data[:16] + struct.pack(">II", width, height) + data[24:]


def test_images_above_the_pixel_limit_are_refused_before_decoding(served):
  model, _ = served
  assert int(model.max_image_pixels.numpy()) == LIMIT
  serve = model.signatures["serving_default"]
  small, big = _png(33, 33), _png(50, 50)
  jpeg = tf.io.encode_jpeg(random_image(60, 40)).numpy()
  limit = rf"more than the maximum of {LIMIT} pixels per image"
  _refused(lambda: serve(image_bytes=tf.constant([small, big])),
           rf"image_bytes\[1\]: 50 x 50 pixels, {limit}")
  _refused(lambda: serve(image_bytes=tf.constant([jpeg])),
           rf"image_bytes\[0\]: 60 x 40 pixels, {limit}")
  bomb = _forged_png_size(small, 100000, 100000)
  _refused(lambda: serve(image_bytes=tf.constant([small, bomb])),
           rf"image_bytes\[1\]: 100000 x 100000 pixels, {limit}")
  _refused(lambda: model.signatures["serve_images"](images=tf.zeros([2, 50, 50, 3], tf.uint8)),
           rf"images\[0\]: 50 x 50 pixels, {limit}")


def test_header_size_of_each_format():
  image = random_image(21, 34)
  encoded = {"png": tf.io.encode_png(image), "jpeg": tf.io.encode_jpeg(image)}
  for name, data in encoded.items():
    assert input_checks.header_size(data).numpy().tolist() == [21, 34], name
  assert input_checks.header_size(tf.constant(b"RIFF....WEBP")).numpy().tolist() == [-1, -1]


def test_export_drops_the_renamed_input_names_wall(served):
  """TensorFlow logs one line listing every captured variable of a signature (11,671
  characters for the real tiny model, see export_test's real-model test)."""
  _, messages = served
  assert not [m for m in messages if "unknown_" in m or len(m) > 1000]
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  absl_logger = logging.getLogger("absl")
  absl_logger.addHandler(handler)
  try:
    with saved_model._quiet_signature_renames():  # pylint: disable=protected-access
      absl_logger.warning("Function `f` contains input name(s) 1, 2 with unsupported "
                          "characters which will be renamed to unknown, unknown_0 in the "
                          "SavedModel.")
      absl_logger.warning("kept")
  finally:
    absl_logger.removeHandler(handler)
  assert [r.getMessage() for r in records] == ["kept"]
