"""The one inference path: image -> padded input -> model -> merger -> maps at original size.

Export (`saved_model.py`, `export_formats/`), the inference CLI (`predict.py`), the
cluster figure and the evaluation all call `PanopticPredictor`, so a SavedModel and the Python path run the
same TensorFlow function on the same padded tensor and give identical maps by
construction. This module is the only place where resize / pad / crop logic lives.

Geometry (documented choice):
* Default (`input_size=None`): no resizing. The image is padded at the bottom and right
  with the mean pixel 127.5 (0 after the model's `x / 127.5 - 1`) to the smallest
  `32k + 1` size (k >= 1) holding it, so mask grid point i (stride s = 4, or 2 with
  the five-stage Cityscapes decoder) sits exactly on pixel s·i (align corners).
* `input_size=(H, W)` (both `32k + 1`): the evaluation protocol (deeplab2's, and this
  project's eval input pipeline, whose functions are called here): an image larger
  than H x W is shrunk (bilinear, aspect ratio kept) to fit, then padded to H x W.
  Exporting with the config's eval crop size reproduces the evaluation's model input.
* The model runs on one image at a time (batch 1), so a prediction never depends on
  the other images of a request nor on a batch's common padded size.
* Only the g mask-logit grid points covering the (resized) image are kept: the merger
  upsamples them (align corners) to `s(g - 1) + 1 >= h` pixels and crops them to the
  image before merging, so padding never counts toward a segment's area or score; when
  the image was resized, the maps go back to the original size by nearest-neighbour
  resizing.
* Batched inputs are checked first, each refusal naming the batch index: encoded bytes
  that do not decode, images larger than `max_image_pixels` (read from the JPEG / PNG /
  GIF / BMP header, before decoding), arrays that are not uint8 [batch, H, W, 3].
"""
import os
from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf

from data import preprocessing
from deeplab2_kmax.app import checkpoints
from deeplab2_kmax.app import configs
from deeplab2_kmax.app.input_checks import guarded, inspect_encoded
from deeplab2_kmax.core import dataset_info as dataset_info_lib
from deeplab2_kmax.core import geometry
from deeplab2_kmax.core import output_keys
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core.geometry import check_input_size
from deeplab2_kmax.core.geometry import padded_length
from deeplab2_kmax.model import build_model
from deeplab2_kmax.post_processing import MaskWiseMerger, check_merger_stride

PAD_VALUE = preprocessing.IMAGE_PAD_VALUE  # 127.5: 0 after the model's x / 127.5 - 1
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
MAP_KEYS = ("panoptic", "semantic", "instance")
SEGMENT_KEYS = ("segment_ids", "segment_classes", "segment_scores")


def prepare_image(image: tf.Tensor, input_size: Optional[Tuple[int, int]] = None):
  """uint8 [h, w, 3] -> (float32 [1, Hp, Wp, 3] padded model input, int32 [2] size of
  the (possibly shrunk) image inside it).

  The resize / pad operations are the evaluation input pipeline's own
  (`data/preprocessing.py`): with `input_size` = the config's eval crop size, the model
  sees exactly the tensor the evaluation feeds it.
  """
  image = tf.convert_to_tensor(image)
  tf.debugging.assert_rank(image, 3, message="image must be [height, width, 3]")
  x = tf.cast(image, tf.float32)
  # The valid region travels as a ones-map padded with zeros (nearest resizing keeps it
  # binary), so its size is read off instead of recomputed.
  valid = tf.ones(tf.shape(image)[:2], tf.int32)
  if input_size is None:
    target = tf.stack([padded_length(tf.shape(image)[0]), padded_length(tf.shape(image)[1])])
    x, valid = preprocessing.pad_to_at_least(x, valid, target, 0,
                                             image_pad_value=PAD_VALUE)
  else:
    x, valid = preprocessing.resize_to_fit_and_pad(x, valid, input_size, 0,
                                                   image_pad_value=PAD_VALUE)
  inner = tf.stack([tf.reduce_sum(valid[:, 0]), tf.reduce_sum(valid[0, :])])
  return x[tf.newaxis], inner


def decode_image(data: tf.Tensor) -> tf.Tensor:
  """JPEG / PNG / BMP / GIF bytes -> uint8 [h, w, 3] (grey and RGBA converted, first GIF
  frame); malformed bytes raise InvalidArgumentError."""
  return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)


def covering_grid(length, stride):
  """Number of grid points of a `stride` grid (align corners) covering pixels
  0..length-1."""
  return (length - 1 + stride - 1) // stride + 1


def mask_stride(padded_size, mask_logits):
  """The mask grid's stride (4; 2 for the five-stage Cityscapes pixel decoder), read
  from the shapes: a 32k+1 input gives a (32k / s) + 1 grid."""
  grid = tf.shape(mask_logits)[1:3]
  return (padded_size - 1) // tf.maximum(grid - 1, 1)


class PanopticPredictor(tf.Module):
  """Runs model + merger on one uint8 image and returns maps at the image's size.

  Args:
    model: a built `KMaXDeepLab` (or any keras model with the DESIGN.md outputs).
    merger: a `MaskWiseMerger` (called as `merger(outputs, output_size, original_size)`)
      whose mask_stride is the model's output_stride (checked here, and against the
      stride read from the shapes at run time).
    label_divisor, ignore_label: from dataset_info.json (pad value of batched maps).
    input_size: optional (H, W), see the module docstring.
    max_image_pixels: batched inputs with more pixels per image are refused (0: any).
  """

  def __init__(self, model, merger, label_divisor: int, ignore_label: int,
               input_size: Optional[Sequence[int]] = None,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, name=None):
    super().__init__(name=name)
    check_merger_stride(model, merger)
    self.model = model
    self.merger = merger
    self.label_divisor = int(label_divisor)
    self.ignore_label = int(ignore_label)
    self.input_size = check_input_size(input_size)
    if int(max_image_pixels) < 0:
      raise UserError(f"--max_image_pixels={max_image_pixels}: must be >= 0")
    self.max_image_pixels = int(max_image_pixels)

  @property
  def void_value(self) -> int:
    return self.ignore_label * self.label_divisor

  def run_model(self, image):
    """(model outputs on the padded image, size of the image inside the padding,
    padded size)."""
    x, inner = prepare_image(image, self.input_size)
    return self.model(x, training=False), inner, tf.shape(x)[1:3]

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  def predict_image(self, image) -> Dict[str, tf.Tensor]:
    """uint8 [h, w, 3] -> {panoptic/semantic/instance: int32 [h, w], segment_ids /
    segment_classes: int32 [N], segment_scores: float32 [N], num_segments: int32 []}."""
    outputs, inner, padded = self.run_model(image)
    stride = mask_stride(padded, outputs[output_keys.MASK_LOGITS])
    merger_stride = getattr(self.merger, "mask_stride", None)
    if merger_stride is not None:
      check = tf.debugging.assert_equal(
          stride, tf.constant(merger_stride, stride.dtype), message=(
              f"PanopticPredictor: the merger's mask_stride={merger_stride} differs from "
              "the stride of the model's mask logits (padded size - 1) / (grid - 1)"))
      with tf.control_dependencies([check]):
        stride = tf.identity(stride)
    grid = covering_grid(inner, stride)
    cropped = {output_keys.CLASS_LOGITS: outputs[output_keys.CLASS_LOGITS]}
    for key in (output_keys.MASK_LOGITS, output_keys.PIXEL_EMBEDDINGS):
      if key in outputs:
        cropped[key] = outputs[key][:, :grid[0], :grid[1], :]
    merged_size = (grid - 1) * stride + 1
    merged = self.merger(cropped, (merged_size[0], merged_size[1]),
                         original_size=(inner[0], inner[1]))
    shape = tf.shape(image)
    result = {}
    for key in MAP_KEYS:
      value = tf.cast(merged[key][0, :inner[0], :inner[1]], tf.int32)
      if self.input_size is not None:
        value = tf.image.resize(value[..., tf.newaxis], shape[:2], method="nearest")[..., 0]
      result[key] = value
    result["segment_ids"] = tf.cast(merged["segment_ids"][0], tf.int32)
    result["segment_classes"] = tf.cast(merged["segment_classes"][0], tf.int32)
    result["segment_scores"] = tf.cast(merged["segment_scores"][0], tf.float32)
    result["num_segments"] = tf.cast(merged["num_segments"][0], tf.int32)
    return result

  def _predict_many(self, count, get_image, sizes):
    """Per-image predictions of `count` images, maps padded (void / 0) to the largest
    size so they stack into [count, H, W]."""
    check = tf.debugging.assert_positive(
        count, message="empty request: send at least one image")
    with tf.control_dependencies([check]):
      count = tf.identity(count)
    max_size = tf.reduce_max(tf.concat([sizes, tf.zeros([1, 2], tf.int32)], 0), axis=0)
    pad_values = {"panoptic": self.void_value, "semantic": self.ignore_label, "instance": 0}
    keys = MAP_KEYS + SEGMENT_KEYS + ("num_segments",)
    element_shapes = {"segment_ids": [None], "segment_classes": [None],
                      "segment_scores": [None], "num_segments": []}
    arrays = tuple(
        tf.TensorArray(tf.float32 if k == "segment_scores" else tf.int32, size=count,
                       element_shape=element_shapes.get(k, [None, None])) for k in keys)

    def body(i, arrays):
      pred = self.predict_image(get_image(i))
      pad = [[0, max_size[0] - sizes[i, 0]], [0, max_size[1] - sizes[i, 1]]]
      written = []
      for key, array in zip(keys, arrays):
        value = pred[key]
        if key in pad_values:
          value = tf.pad(value, pad, constant_values=pad_values[key])
        written.append(array.write(i, value))
      return i + 1, tuple(written)

    _, arrays = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), arrays))
    result = {k: a.stack() for k, a in zip(keys, arrays)}
    for k in MAP_KEYS:
      result[k] = tf.reshape(result[k], [count, max_size[0], max_size[1]])
    result["num_segments"] = tf.reshape(result["num_segments"], [count])
    result["image_size"] = sizes
    return result

  def _too_large(self, size) -> tf.Tensor:
    pixels = tf.cast(size[0], tf.int64) * tf.cast(size[1], tf.int64)
    return tf.logical_and(self.max_image_pixels > 0, pixels > self.max_image_pixels)

  @staticmethod
  def _refused():
    """What a refused request 'returns' (never seen: the refusal raises)."""
    maps, segments = tf.zeros([0, 0, 0], tf.int32), tf.zeros([0, 0], tf.int32)
    result = {k: maps for k in MAP_KEYS}
    result.update({"segment_ids": segments, "segment_classes": segments,
                   "segment_scores": tf.zeros([0, 0]), "num_segments": tf.zeros([0], tf.int32),
                   "image_size": tf.zeros([0, 2], tf.int32)})
    return result

  def _size_limited(self, name, sizes, large, fn):
    """fn() unless an image is above max_image_pixels (refused naming its index)."""
    def message():
      index = tf.argmax(tf.cast(large, tf.int32), output_type=tf.int32)
      return tf.strings.format(
          name + "[{}]: {} x {} pixels, more than the maximum of "
          + f"{self.max_image_pixels} pixels per image (export --max_image_pixels)",
          (index, sizes[index][0], sizes[index][1]))
    return guarded(tf.logical_not(tf.reduce_any(large)), message, fn, self._refused)

  @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8)])
  def predict_images(self, images):
    """uint8 [B, H, W, 3] -> maps [B, H, W], segments [B, N], num_segments [B]."""
    shape = tf.shape(images)
    rank_ok = tf.equal(tf.size(shape), 4)
    channels = tf.cond(rank_ok, lambda: shape[-1], lambda: tf.constant(-1))

    def checked():
      batch = tf.ensure_shape(images, [None, None, None, 3])
      sizes = tf.tile(shape[1:3][tf.newaxis], [shape[0], 1])
      large = tf.fill([shape[0]], self._too_large(shape[1:3]))
      return self._size_limited("images", sizes, large, lambda: self._predict_many(
          shape[0], lambda i: batch[i], sizes))

    return guarded(tf.logical_and(rank_ok, tf.equal(channels, 3)), lambda: (
        tf.strings.format("images: expected uint8 [batch, height, width, 3] (RGB), got "
                          "shape {}", shape)), checked, self._refused)

  @tf.function(input_signature=[tf.TensorSpec(None, tf.string)])
  def predict_encoded(self, image_bytes):
    """JPEG/PNG/BMP/GIF bytes [B] (any sizes) -> maps [B, H_max, W_max] padded with
    void, plus `image_size` [B, 2] (height, width of each image). Bytes that do not
    decode or an image above max_image_pixels raise InvalidArgumentError naming the
    index."""
    def checked():
      batch = tf.reshape(image_bytes, [-1])
      count = tf.shape(batch)[0]
      # Sizes first (to pad every map to the largest image), then one image at a time:
      # each image is decoded twice rather than all decoded images held at once.
      ok, sizes, large = inspect_encoded(batch, count, self._too_large, decode_image)
      sizes = tf.cast(sizes, tf.int32)
      first_bad = lambda: tf.argmax(tf.cast(tf.logical_not(ok), tf.int32),
                                    output_type=tf.int32)
      return guarded(tf.reduce_all(ok), lambda: tf.strings.format(
          "image_bytes[{}]: not a decodable JPEG, PNG, BMP or GIF image", first_bad()),
                     lambda: self._size_limited("image_bytes", sizes, large, lambda: (
                         self._predict_many(count, lambda i: decode_image(batch[i]),
                                            sizes))), self._refused)

    return guarded(tf.equal(tf.rank(image_bytes), 1), lambda: tf.strings.format(
        "image_bytes: expected a 1-D string tensor [batch] of encoded images, got shape "
        "{}", tf.shape(image_bytes)), checked, self._refused)


def load_predictor(gin_files: Sequence[str], gin_bindings: Sequence[str], checkpoint: str,
                   dataset_info, input_size=None,
                   max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> "PanopticPredictor":
  """gin config + checkpoint + dataset_info.json -> a restored PanopticPredictor (the
  Python path every CLI shares). A dataset_info.json beside the checkpoint (the
  trainer's copy) must agree with `dataset_info`."""
  if not gin_files:
    raise UserError("--gin_file: required (the config the checkpoint was trained with)")
  # skip_unknown: training configs also bind the trainer / input pipeline, which
  # inference does not import; bindings of the model and merger are still checked.
  # A process may build several predictors (parse_config unlocks the config).
  configs.parse_config(gin_files, gin_bindings, skip_unknown=True)
  info = dataset_info_lib.as_dataset_info(dataset_info)
  prefix = checkpoints.resolve_checkpoint(checkpoint)
  if not isinstance(dataset_info, dataset_info_lib.DatasetInfo):
    dataset_info_lib.check_agrees(
        info, str(dataset_info), os.path.join(os.path.dirname(prefix), "dataset_info.json"),
        f"the checkpoint {prefix} was made with")
  model = build_model(num_classes=info.num_classes)
  checkpoints.restore_resolved(model, prefix)
  merger = MaskWiseMerger(thing_train_ids=info.thing_train_ids,
                          label_divisor=info.label_divisor, ignore_label=info.ignore_label,
                          mask_stride=model.output_stride)
  if input_size is None:  # the config's eval input size (None: each image's own size)
    input_size = geometry.eval_input_size()
  return PanopticPredictor(model, merger, info.label_divisor, info.ignore_label,
                           input_size=input_size, max_image_pixels=max_image_pixels)
