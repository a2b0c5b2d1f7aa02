"""End to end at output stride 2 (the Cityscapes configs): build_dataset(label_stride=2)
-> a tiny model from configs/cityscapes/kmax_r50.gin -> KMaXLoss -> finite gradients."""
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from data import input_pipeline
from data import panoptic_io
from data import tfrecord_format
from deeplab2_kmax.core.dataset_info import Category, DatasetInfo
from deeplab2_kmax.losses.kmax_loss import KMaXLoss
from deeplab2_kmax.losses.kmax_loss import LOSS_KEYS
from deeplab2_kmax import model as model_lib
from deeplab2_kmax import post_processing  # noqa: F401  (gin: MaskWiseMerger)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
D, IGNORE = 1000, 255   # Cityscapes label divisor
INFO = DatasetInfo("tiny_cityscapes", D, IGNORE, [
    Category(24, 0, "person", 1, (220, 20, 60)), Category(26, 1, "car", 1, (0, 0, 142)),
    Category(7, 2, "road", 0, (128, 64, 128))])
# Everything of the tiny CPU model (model.py docstring) except what the Cityscapes
# config sets: five pixel-decoder stages (the last at stride 2), no semantic decoder.
TINY = """
build_model.backbone_kwargs = {"depths": (1, 1, 1, 1), "width_multiplier": 0.125,
                               "stem_width_multiplier": 0.25}
build_model.num_queries = 16
build_model.pixel_decoder_dims = (16, 8, 8, 8, 8)
build_model.pixel_decoder_blocks = (1, 1, 1, 1, 1)
build_model.axial_num_heads = 2
build_model.decoder_layers = (1, 1, 1)
build_model.decoder_channels = 32
build_model.decoder_key_depth = 16
build_model.decoder_value_depth = 32
build_model.decoder_num_heads = 2
build_model.ffn_channels = 64
build_model.embedding_dim = 16
build_model.pixel_head_channels = 32
build_model.semantic_channels = 16
"""


def _scene(rng, size=40):
  pan = np.full((size, size), 2 * D, np.int64)                    # road
  for k in range(1, 4):
    y, x = rng.integers(0, size - 12, 2)
    h, w = rng.integers(4, 12, 2)
    pan[y:y + h, x:x + w] = int(rng.integers(0, 2)) * D + k       # person / car
  pan[:3, :5] = IGNORE * D                                         # void
  pan[size - 2, 1] = 1 * D + 9                                     # a 1-pixel car
  image = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
  return image, pan.astype(np.int32)


def _write(path, num=3):
  rng = np.random.default_rng(0)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i in range(num):
      image, pan = _scene(rng)
      writer.write(tfrecord_format.make_example(
          panoptic_io.encode_png(image), "png", pan.shape[0], pan.shape[1], f"im{i}",
          f"im{i}.png", panoptic_io.encode_id_png(pan)).SerializeToString())


@pytest.fixture(name="cityscapes_model", scope="module")
def fixture_cityscapes_model():
  gin.clear_config()
  gin.add_config_file_search_path(REPO)
  gin.parse_config_files_and_bindings(
      [os.path.join(REPO, "configs/cityscapes/kmax_r50.gin")], [TINY],
      finalize_config=False)
  try:
    model = model_lib.build_model(num_classes=INFO.num_classes)
  finally:
    gin.clear_config()
  return model


# ~15 s CPU (~30 s wall on the shared 2 cores): the only check that the pipeline, the
# Cityscapes config's stride-2 model and the loss agree on resolutions end to end.
@pytest.mark.slow
def test_label_stride_2_batch_trains_the_cityscapes_model(tmp_path, cityscapes_model):
  model = cityscapes_model
  assert model.output_stride == 2 and model.num_queries == 16
  assert not model.use_semantic_decoder and len(model.pixel_decoder_dims) == 5
  _write(tmp_path / "train-00000-of-00001.tfrecord")
  ds = input_pipeline.build_dataset(
      str(tmp_path / "train-*"), INFO, True, 2, crop_size=(33, 33), min_scale=0.8,
      max_scale=1.2, max_segments=8, seed=1, label_stride=model.output_stride,
      small_instance_area=40, small_instance_weight=3.0)
  features, labels = next(iter(ds))
  assert labels["masks"].shape == (2, 17, 17, 8)
  assert labels["semantic_strided"].shape == (2, 17, 17)
  assert labels["mask_valid"].numpy().sum() >= 2

  loss = KMaXLoss(instance_discrimination_sample_k=32, semantic_top_k_percent=0.2)
  seed = tf.constant([3, 0], tf.int64)
  with tf.GradientTape() as tape:
    outputs = model(features["image"], training=True)
    result = loss(outputs, labels, seed=seed)
  assert outputs["mask_logits"].shape == (2, 17, 17, 16)          # stride 2
  assert outputs["aux_outputs"][0]["mask_logits"].shape == (2, 17, 17, 16)
  assert outputs["semantic_logits"].shape == (2, 9, 9, 3)         # stride 4
  values = {k: float(result[k]) for k in LOSS_KEYS}
  assert all(np.isfinite(v) for v in values.values()), values
  assert values["pq_style"] > 0 and values["mask_id"] > 0 and values["semantic"] > 0
  grads = [None if g is None else tf.convert_to_tensor(g)  # IndexedSlices -> dense
           for g in tape.gradient(result["total"], model.trainable_variables)]
  missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
  assert not missing, missing
  for var, grad in zip(model.trainable_variables, grads):
    if grad is not None:
      assert np.all(np.isfinite(np.asarray(grad))), var.path
  assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads if g is not None) > 0

  # Stride-4 labels do not fit this model: a clear error names label_stride.
  ds4 = input_pipeline.build_dataset(
      str(tmp_path / "train-*"), INFO, True, 2, crop_size=(33, 33), max_segments=8,
      seed=1)
  _, labels4 = next(iter(ds4))
  with pytest.raises(ValueError, match="label_stride"):
    loss(outputs, labels4, seed=seed)
