"""Tests for deeplab2_kmax/app/predictor.py, plus the stand-ins the export / predict tests import.

`tiny_model` is a real (tiny) keras model with the DESIGN.md output contract, and
`ArgmaxMerger` a simple, exactly-specified merger (align-corners upsampling, argmax over
masks). They test the inference plumbing independently of the full kMaX model and of
`MaskWiseMerger`; the tests also run the real ones where they are importable.
"""
import keras
import numpy as np
import tensorflow as tf

D = 256
IGNORE = 255


def tiny_model(num_classes: int = 3, num_masks: int = 6, seed: int = 0) -> keras.Model:
  """images float32 [B, H, W, 3] in [0, 255] -> class_logits [B, N, C+1], mask_logits
  [B, ceil(H/4), ceil(W/4), N], pixel_embeddings, cluster_assignments (one per 'layer')."""
  keras.utils.set_random_seed(seed)
  images = keras.Input((None, None, 3))
  x = keras.layers.Rescaling(1 / 127.5, offset=-1)(images)
  x = keras.layers.Conv2D(8, 5, strides=4, padding="same", activation="gelu")(x)
  x = keras.layers.Conv2D(8, 3, padding="same", activation="gelu")(x)
  # x20: confident masks (softmax probabilities above the merger's 0.4 pixel threshold).
  mask_logits = keras.layers.Rescaling(20.0)(
      keras.layers.Conv2D(num_masks, 3, padding="same")(x))
  pooled = keras.layers.GlobalAveragePooling2D()(x)
  class_logits = keras.layers.Reshape((num_masks, num_classes + 1))(
      keras.layers.Dense(num_masks * (num_classes + 1))(pooled))
  coarse = keras.layers.AveragePooling2D(2, padding="same")(mask_logits)
  assignments = [keras.ops.cast(keras.ops.argmax(m, axis=-1), "int32")
                 for m in (coarse, mask_logits)]
  outputs = {"class_logits": class_logits, "mask_logits": mask_logits,
             "pixel_embeddings": x, "cluster_assignments": assignments}
  return keras.Model(images, outputs)


class ArgmaxMerger:
  """Every pixel joins its argmax mask; mask class = argmax over real classes; class 0 is
  a thing (instance = mask index + 1), the others are stuff. Upsampling: bilinear with
  aligned corners (the geometry `app.predictor.py` assumes of `MaskWiseMerger`)."""

  def __init__(self, num_classes: int = 3, label_divisor: int = D):
    self.num_classes = num_classes
    self.label_divisor = label_divisor

  def __call__(self, outputs, output_size, original_size=None):
    logits = tf.compat.v1.image.resize(outputs["mask_logits"], output_size,
                                       align_corners=True)
    if original_size is not None:
      logits = logits[:, :original_size[0], :original_size[1]]
    mask_id = tf.cast(tf.argmax(logits, -1), tf.int32)
    probs = tf.nn.softmax(outputs["class_logits"][..., :self.num_classes])
    classes = tf.cast(tf.argmax(probs, -1), tf.int32)
    semantic = tf.gather(classes, mask_id, batch_dims=1)
    instance = tf.where(semantic == 0, mask_id + 1, 0)
    n = tf.shape(classes)[1]
    return {"panoptic": semantic * self.label_divisor + instance, "semantic": semantic,
            "instance": instance, "segment_ids": classes * self.label_divisor +
            tf.where(classes == 0, tf.range(n)[tf.newaxis] + 1, 0),
            "segment_classes": classes, "segment_scores": tf.reduce_max(probs, -1),
            "num_segments": tf.fill(tf.shape(classes)[:1], n)}


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
  """A smooth random uint8 RGB image (blobs, so predictions have segments)."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3)).astype(np.uint8)
  from PIL import Image
  return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


# ----------------------------------------------------------------------------- tests
import pytest  # noqa: E402

from deeplab2_kmax.app import checkpoints, configs  # noqa: E402
from deeplab2_kmax.core import geometry  # noqa: E402
from deeplab2_kmax.app import predictor as predictor_lib  # noqa: E402


def _predictor(input_size=None):
  return predictor_lib.PanopticPredictor(tiny_model(), ArgmaxMerger(), D, IGNORE,
                                     input_size=input_size)


def test_padded_length():
  assert [geometry.padded_length(n) for n in (1, 33, 34, 64, 65, 66, 641)] == \
      [33, 33, 65, 65, 65, 97, 641]
  assert int(geometry.padded_length(tf.constant(66))) == 97
  assert [predictor_lib.covering_grid(n, 4) for n in (1, 2, 5, 6, 33)] == [1, 2, 2, 3, 9]
  assert [predictor_lib.covering_grid(n, 2) for n in (1, 2, 3, 4)] == [1, 2, 2, 3]
  assert list(predictor_lib.mask_stride(tf.constant([65, 97]), tf.zeros([1, 17, 25, 2]))) == [4, 4]
  assert list(predictor_lib.mask_stride(tf.constant([65, 33]), tf.zeros([1, 33, 17, 2]))) == [2, 2]


def test_check_input_size_names_the_flag():
  assert geometry.check_input_size(None) is None
  assert geometry.check_input_size(["641", "513"]) == (641, 513)
  with pytest.raises(ValueError, match="--input_size"):
    geometry.check_input_size((640, 641))
  with pytest.raises(ValueError, match="--input_size"):
    geometry.check_input_size((65,))


def test_prepare_image_pads_with_mean_pixel():
  image = random_image(40, 70)
  x, inner = predictor_lib.prepare_image(image)
  assert x.shape == (1, 65, 97, 3) and list(inner.numpy()) == [40, 70]
  np.testing.assert_array_equal(x[0, :40, :70].numpy(), image.astype(np.float32))
  assert np.all(x[0, 40:].numpy() == 127.5) and np.all(x[0, :, 70:].numpy() == 127.5)


def test_prepare_image_with_input_size_is_the_eval_pipeline_preprocessing():
  from data import preprocessing
  x, inner = predictor_lib.prepare_image(random_image(100, 50), (65, 97))
  assert x.shape == (1, 65, 97, 3) and list(inner.numpy()) == [65, 32]
  assert np.all(x[0, :, 32:].numpy() == 127.5)
  # Small images are padded, not enlarged, exactly as the eval input pipeline does.
  image = random_image(40, 70)
  x, inner = predictor_lib.prepare_image(image, (97, 129))
  want, _ = preprocessing.resize_to_fit_and_pad(
      tf.cast(image, tf.float32), tf.zeros([40, 70], tf.int32), (97, 129), 0)
  np.testing.assert_array_equal(x[0].numpy(), want.numpy())
  assert list(inner.numpy()) == [40, 70]


@pytest.mark.parametrize("size", [(1, 1), (33, 33), (40, 70), (70, 41)])
def test_predict_image_equals_merging_the_padded_output_then_cropping(size):
  """Cropping the mask grid before merging changes nothing inside the image (align
  corners), and the maps come back at the image's own size."""
  predictor = _predictor()
  image = random_image(*size, seed=size[0])
  pred = {k: v.numpy() for k, v in predictor.predict_image(image).items()}
  x, _ = predictor_lib.prepare_image(image)
  full = ArgmaxMerger()(predictor.model(x, training=False), x.shape[1:3])
  for key in predictor_lib.MAP_KEYS:
    assert pred[key].shape == size
    np.testing.assert_array_equal(pred[key], full[key][0, :size[0], :size[1]].numpy())
  assert pred["segment_classes"].shape == (6,) and pred["num_segments"] == 6


def test_resized_prediction_comes_back_at_original_size():
  predictor = _predictor(input_size=(65, 65))
  pred = predictor.predict_image(random_image(130, 90))
  assert pred["panoptic"].shape == (130, 90)


def test_batched_paths_equal_single_image_path():
  predictor = _predictor()
  images = [random_image(40, 70, seed=1), random_image(50, 33, seed=2)]
  singles = [{k: v.numpy() for k, v in predictor.predict_image(im).items()} for im in images]
  batch = predictor.predict_images(np.stack([images[0], random_image(40, 70, seed=3)]))
  np.testing.assert_array_equal(batch["panoptic"][0].numpy(), singles[0]["panoptic"])
  encoded = [tf.io.encode_png(images[0]).numpy(), tf.io.encode_jpeg(images[1]).numpy()]
  decoded_jpeg = tf.io.decode_jpeg(encoded[1]).numpy()
  out = predictor.predict_encoded(tf.constant(encoded))
  assert out["panoptic"].shape == (2, 50, 70)
  np.testing.assert_array_equal(out["image_size"].numpy(), [[40, 70], [50, 33]])
  np.testing.assert_array_equal(out["panoptic"][0, :40, :70].numpy(), singles[0]["panoptic"])
  assert np.all(out["panoptic"][0, 40:].numpy() == IGNORE * D)
  assert np.all(out["semantic"][0, :, 70:].numpy() == IGNORE)
  jpeg_pred = predictor.predict_image(decoded_jpeg)
  np.testing.assert_array_equal(out["panoptic"][1, :, :33].numpy(),
                                jpeg_pred["panoptic"].numpy())
  np.testing.assert_array_equal(out["segment_scores"][1].numpy(),
                                jpeg_pred["segment_scores"].numpy())


def test_malformed_bytes_raise_invalid_argument():
  predictor = _predictor()
  with pytest.raises(tf.errors.InvalidArgumentError):
    predictor.predict_encoded(tf.constant([b"not an image"]))
  truncated = tf.io.encode_png(random_image(20, 20)).numpy()[:40]
  with pytest.raises(tf.errors.InvalidArgumentError):
    predictor.predict_encoded(tf.constant([truncated]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="empty request"):
    predictor.predict_encoded(tf.constant([], tf.string))


def permissive_merger():
  """The real MaskWiseMerger with thresholds low enough for an untrained tiny model."""
  from deeplab2_kmax.post_processing import MaskWiseMerger
  return MaskWiseMerger(thing_train_ids=[0], label_divisor=D, ignore_label=IGNORE,
                        thing_threshold=0.0, stuff_threshold=0.0, thing_area_limit=1,
                        stuff_area_limit=1)


@pytest.mark.parametrize("size", [(33, 65), (45, 38)])
def test_real_merger_on_cropped_grid_equals_merger_on_full_padded_output(size):
  merger = permissive_merger()
  predictor = predictor_lib.PanopticPredictor(tiny_model(), merger, D, IGNORE)
  image = random_image(*size, seed=7)
  pred = {k: v.numpy() for k, v in predictor.predict_image(image).items()}
  x, _ = predictor_lib.prepare_image(image)
  full = merger(predictor.model(x, training=False), x.shape[1:3], original_size=size)
  assert pred["num_segments"] > 1
  for key in predictor_lib.MAP_KEYS + predictor_lib.SEGMENT_KEYS + ("num_segments",):
    np.testing.assert_array_equal(pred[key], full[key][0].numpy(), err_msg=key)


def test_untracked_variables_are_refused(tmp_path):
  class ListHolder(keras.layers.Layer):
    def __init__(self):
      super().__init__()
      self.blocks = [keras.layers.Dense(3), keras.layers.Dense(3)]  # invisible to TF
      self.head = keras.layers.Dense(2)

    def call(self, x):
      for block in self.blocks:
        x = block(x)
      return self.head(keras.ops.mean(x, axis=(1, 2)))

  model = keras.Sequential([ListHolder()])
  model(tf.zeros([1, 5, 5, 3]))
  assert checkpoints.untracked_variables(model) == [v.path for v in model.variables[:4]]
  prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt-1"))
  with pytest.raises(ValueError, match="4 of 6 model variables are invisible"):
    checkpoints.restore_model(model, prefix)
  tiny = tiny_model()
  assert checkpoints.untracked_variables(tiny) == []
  prefix = tf.train.Checkpoint(model=tiny).write(str(tmp_path / "tiny-1"))
  restored = tiny_model(seed=1)
  checkpoints.restore_model(restored, prefix)
  for a, b in zip(tiny.variables, restored.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------------- stride-2 (Cityscapes R50)
REPO = configs.REPO_ROOT
# configs/cityscapes/kmax_r50.gin shrunk to a tiny CPU model: five pixel-decoder stages,
# the last fusing the ResNet stem, so mask logits at stride 2. Merge thresholds low
# enough for an untrained model (also checks that load_predictor's merger reads gin).
TINY_CITYSCAPES = [
    'build_model.backbone_kwargs = {"depths": (1, 1, 1, 1), "width_multiplier": 0.125, '
    '"stem_width_multiplier": 0.25}',
    "build_model.num_queries = 8", "build_model.pixel_decoder_dims = (16, 8, 8, 8, 8)",
    "build_model.pixel_decoder_blocks = (1, 1, 1, 1, 1)", "build_model.axial_num_heads = 2",
    "build_model.decoder_layers = (1, 1, 1)", "build_model.decoder_channels = 32",
    "build_model.decoder_key_depth = 16", "build_model.decoder_value_depth = 32",
    "build_model.decoder_num_heads = 2", "build_model.ffn_channels = 64",
    "build_model.embedding_dim = 16", "build_model.pixel_head_channels = 32",
    "MaskWiseMerger.thing_threshold = 0.0", "MaskWiseMerger.stuff_threshold = 0.0",
    "MaskWiseMerger.thing_area_limit = 1", "MaskWiseMerger.stuff_area_limit = 1"]


@pytest.mark.slow  # builds and checkpoints a tiny Cityscapes R50 model: ~20 s on 2 cores
def test_stride2_cityscapes_model_predicts_maps_of_the_image_size(tmp_path):
  import gin
  from deeplab2_kmax.core.dataset_info import Category, DatasetInfo
  from deeplab2_kmax import backbones  # noqa: F401  pylint: disable=unused-import
  from deeplab2_kmax.model import build_model
  from deeplab2_kmax.post_processing import MaskWiseMerger
  info = DatasetInfo("tiny_cityscapes", 1000, IGNORE, [
      Category(24, 0, "person", 1, (220, 20, 60)), Category(26, 1, "car", 1, (0, 0, 142)),
      Category(7, 2, "road", 0, (128, 64, 128))])
  gin_file = str(tmp_path / "tiny.gin")
  with open(gin_file, "w") as f:
    f.write(f"include '{REPO}/configs/cityscapes/kmax_r50.gin'\n")
  with gin.unlock_config():
    gin.parse_config_files_and_bindings([gin_file], TINY_CITYSCAPES, skip_unknown=True)
  try:
    model = build_model(num_classes=3)
  finally:
    gin.clear_config()
  assert model.output_stride == 2
  model(tf.zeros([1, 65, 65, 3]), training=False)
  for v in model.variables:  # confident masks, as a trained model's (see export_test)
    if v.path.endswith("mask_logits_bn/gamma"):
      v.assign(tf.fill(v.shape, 30.0))
  prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt-1"))
  try:
    predictor = predictor_lib.load_predictor([gin_file], TINY_CITYSCAPES, prefix, info)
    merger = predictor.merger
  finally:
    gin.clear_config()
  assert merger.mask_stride == 2 and merger.thing_area_limit == 1
  assert predictor.input_size == (1025, 2049)  # the config's eval_input_size
  predictor = predictor_lib.PanopticPredictor(predictor.model, merger, 1000, IGNORE)
  for size in [(33, 65), (45, 38), (1, 1), (70, 41)]:
    image = random_image(*size, seed=size[0])
    pred = {k: v.numpy() for k, v in predictor.predict_image(image).items()}
    for key in predictor_lib.MAP_KEYS:
      assert pred[key].shape == size, key
    x, _ = predictor_lib.prepare_image(image)
    outputs = predictor.model(x, training=False)
    assert outputs["mask_logits"].shape[1] == (x.shape[1] - 1) // 2 + 1
    full = merger(outputs, x.shape[1:3], original_size=size)
    for key in predictor_lib.MAP_KEYS + predictor_lib.SEGMENT_KEYS + ("num_segments",):
      np.testing.assert_array_equal(pred[key], full[key][0].numpy(), err_msg=key)
    if size[0] > 1:
      assert pred["num_segments"] >= 1
  resized = predictor_lib.PanopticPredictor(model, merger, 1000, IGNORE, input_size=(65, 65))
  assert resized.predict_image(random_image(130, 90))["panoptic"].shape == (130, 90)
  # A merger built for stride-4 logits is refused with a clear error.
  stride4 = MaskWiseMerger(**{**merger.get_config(), "mask_stride": 4})
  with pytest.raises(ValueError, match="mask_stride=4 differs from the model's output_stride=2"):
    predictor_lib.PanopticPredictor(model, stride4, 1000, IGNORE)


def test_stride_check_at_run_time_names_the_merger_stride():
  """A model without `output_stride` (stride-4 tiny_model) and a stride-2 merger: the
  shapes tell."""
  from deeplab2_kmax.post_processing import MaskWiseMerger
  merger = MaskWiseMerger(**{**permissive_merger().get_config(), "mask_stride": 2})
  predictor = predictor_lib.PanopticPredictor(tiny_model(), merger, D, IGNORE)
  with pytest.raises(tf.errors.InvalidArgumentError, match="mask_stride=2 differs"):
    predictor.predict_image(random_image(33, 33))
