"""Tests for the full KMaXDeepLab model at tiny sizes."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.layers import test_utils
from deeplab2_kmax.layers import tracking
from deeplab2_kmax import model as model_lib

TINY = test_utils.TINY_MODEL_KWARGS


@keras.saving.register_keras_serializable(package="deeplab2_kmax_test")
class StandInBackbone(keras.layers.Layer):
  """Four stride-2 convs: res2..res5 at strides 4/8/16/32 ('same' = ceil sizes)."""

  def __init__(self, width=8, **kwargs):
    super().__init__(**kwargs)
    self.width = width
    self.stem = keras.layers.Conv2D(width, 3, strides=4, padding="same")
    self.convs = [keras.layers.Conv2D(width * 2 ** i, 3, strides=2, padding="same")
                  for i in range(1, 4)]
    self.last_input = None

  def build(self, input_shape):
    pass  # convs build on first call

  def call(self, x, training=False):
    self.last_input = x
    out = {"res2": self.stem(x)}
    for level, conv in zip((3, 4, 5), self.convs):
      out[f"res{level}"] = conv(out[f"res{level - 1}"])
    return out

  def get_config(self):
    return {**super().get_config(), "width": self.width}


@pytest.fixture(scope="module")
def tiny_model():
  return model_lib.KMaXDeepLab(3, backbone=StandInBackbone(), **TINY)


def _images(batch=2, size=33, seed=0):
  return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype(
      "float32")


def test_output_contract(tiny_model):
  images = _images()
  out = tiny_model(images, training=True)
  assert out["class_logits"].shape == (2, 16, 4)
  assert out["mask_logits"].shape == (2, 9, 9, 16)
  assert out["pixel_embeddings"].shape == (2, 9, 9, 16)
  assert out["semantic_logits"].shape == (2, 9, 9, 3)
  assert len(out["aux_outputs"]) == 3
  for aux in out["aux_outputs"]:
    assert {k: tuple(v.shape) for k, v in aux.items()} == {
        "class_logits": (2, 16, 4), "mask_logits": (2, 9, 9, 16),
        "pixel_embeddings": (2, 9, 9, 16)}
  assert [tuple(a.shape) for a in out["cluster_assignments"]] == [
      (2, 2, 2), (2, 3, 3), (2, 5, 5)]
  np.testing.assert_allclose(np.asarray(tiny_model.backbone.last_input),
                             images / 127.5 - 1.0, atol=1e-6)
  inference = tiny_model(images, training=False)
  assert "semantic_logits" not in inference
  # At inference the aux outputs stay at their decoder layer's resolution.
  for aux, assignment in zip(inference["aux_outputs"],
                             inference["cluster_assignments"]):
    assert tuple(aux["mask_logits"].shape) == tuple(assignment.shape) + (16,)
  assert isinstance(tiny_model.semantic_branch, keras.layers.Layer)
  semantic_ids = {id(w) for w in tiny_model.semantic_branch.trainable_weights}
  assert semantic_ids and semantic_ids < {id(w) for w in tiny_model.trainable_weights}


def test_every_weight_is_trained_by_the_outputs(tiny_model):
  """A loss over all outputs reaches every trainable weight (nothing disconnected)."""
  images = _images(batch=2, seed=2)
  with tf.GradientTape() as tape:
    out = tiny_model(images, training=True)
    predictions = [out] + out["aux_outputs"]
    loss = tf.reduce_mean(out["semantic_logits"] ** 2)
    for p in predictions:
      loss += tf.reduce_mean(tf.nn.log_softmax(p["mask_logits"])[..., 0])
      loss += tf.reduce_mean(p["class_logits"] ** 2)
      loss += tf.reduce_mean(p["pixel_embeddings"][..., 0])
  grads = tape.gradient(loss, tiny_model.trainable_weights)
  missing = [w.path for w, g in zip(tiny_model.trainable_weights, grads) if g is None]
  assert not missing


def test_graph_dynamic_shapes_and_xla_match_eager(tiny_model):
  images = _images(seed=1)
  eager = tiny_model(images, training=False)
  spec = tf.TensorSpec([None, None, None, 3], tf.float32)
  graph = tf.function(lambda x: tiny_model(x, training=False), input_signature=[spec])
  xla = tf.function(lambda x: tiny_model(x, training=False), jit_compile=True)
  for fn in (graph, xla):
    got = fn(images)
    for key in ("class_logits", "mask_logits", "pixel_embeddings"):
      np.testing.assert_allclose(got[key].numpy(), np.asarray(eager[key]),
                                 atol=1e-4, rtol=1e-4)
    for a, b in zip(got["cluster_assignments"], eager["cluster_assignments"]):
      assert np.mean(a.numpy() == np.asarray(b)) > 0.95  # argmax ties may flip
  out = graph(_images(batch=1, size=65))
  assert out["mask_logits"].shape == (1, 17, 17, 16)


def test_get_config_round_trip(tiny_model):
  config = tiny_model.get_config()
  clone = model_lib.KMaXDeepLab.from_config(config)
  assert clone.get_config() == config
  images = _images(batch=1)
  tiny_model(images, training=True)
  clone(images, training=True)  # builds the semantic branch too
  clone.set_weights(tiny_model.get_weights())
  np.testing.assert_allclose(np.asarray(clone(images)["mask_logits"]),
                             np.asarray(tiny_model(images)["mask_logits"]),
                             atol=1e-5)


def test_build_model_from_gin_with_named_backbone():
  gin.clear_config()
  try:
    gin.parse_config(
        "build_model.backbone = 'resnet50'\n"
        "build_model.backbone_kwargs = {'depths': (1, 1, 1, 1), "
        "'width_multiplier': 0.125, 'stem_width_multiplier': 0.25}\n"
        "build_model.interaction = 'dual_path_kmeans_cross_attention'\n"
        "build_model.norm_config = {'momentum': 0.9}\n"
        + "".join(f"build_model.{k} = {v!r}\n" for k, v in TINY.items()))
    model = model_lib.build_model(num_classes=2)
  finally:
    gin.clear_config()
  assert model.interaction == "dual_path_kmeans_cross_attention"
  # Symbolic build (what the trainer does before restoring) creates every variable.
  symbolic = model(keras.Input(shape=(65, 65, 3), batch_size=1), training=True)
  assert tuple(symbolic["mask_logits"].shape) == (1, 17, 17, 16)
  num_weights = len(model.weights)
  out = model(_images(batch=1), training=True)
  assert len(model.weights) == num_weights
  assert out["class_logits"].shape == (1, 16, 3)
  assert out["mask_logits"].shape == (1, 9, 9, 16)
  assert len(out["aux_outputs"]) == 3
  inference_params = test_utils.count_params(model) - test_utils.count_params(
      model.semantic_branch)
  assert 0 < inference_params < test_utils.count_params(model)


def test_cityscapes_variant_stride2_outputs_without_stem():
  config = dict(TINY, pixel_decoder_dims=(16, 8, 8, 8, 4),
                pixel_decoder_blocks=(1, 1, 1, 1, 1), use_semantic_decoder=False)
  model = model_lib.KMaXDeepLab(2, backbone=StandInBackbone(), **config)
  assert model.output_stride == 2
  out = model(_images(batch=1), training=True)
  assert out["mask_logits"].shape == (1, 17, 17, 16)
  assert out["pixel_embeddings"].shape == (1, 17, 17, 16)
  assert out["aux_outputs"][0]["mask_logits"].shape == (1, 17, 17, 16)
  assert out["semantic_logits"].shape == (1, 9, 9, 2)  # head on res5, stride-4 grid


def test_cityscapes_variant_output_stride_follows_the_backbone_stage1():
  # deeplab2 fuses "stage1" in the fifth stage: stride 2 for ResNet, 4 for ConvNeXt.
  config = dict(TINY, pixel_decoder_dims=(16, 8, 8, 8, 4),
                pixel_decoder_blocks=(1, 1, 1, 1, 1), use_semantic_decoder=False)
  for name, kwargs, stride in (
      ("resnet50", test_utils.TINY_RESNET_KWARGS, 2),
      ("convnext_tiny", {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)}, 4)):
    model = model_lib.KMaXDeepLab(2, backbone=name, backbone_kwargs=kwargs, **config)
    assert model.output_stride == stride
    out = model(_images(batch=1), training=False)
    size = (33 - 1) // stride + 1
    assert out["mask_logits"].shape == (1, size, size, 16)


def test_checkpoint_round_trip_covers_list_held_layers(tiny_model, tmp_path):
  images = _images(batch=1, seed=4)
  tiny_model(images, training=True)
  prefix = tf.train.Checkpoint(model=tiny_model).save(str(tmp_path / "ckpt"))
  saved = [n for n in tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
           if n.endswith("VARIABLE_VALUE") and not n.startswith("save_counter")]
  assert len(saved) == len(tiny_model.weights)  # decoder layers/blocks live in lists
  fresh = model_lib.KMaXDeepLab(3, backbone=StandInBackbone(), **TINY)
  fresh(images, training=True)
  tf.train.Checkpoint(model=fresh).restore(prefix).assert_consumed()
  for key in ("class_logits", "mask_logits"):
    np.testing.assert_array_equal(np.asarray(fresh(images)[key]),
                                  np.asarray(tiny_model(images)[key]))
  keys = tracking.list_held_layers(fresh)
  assert "backbone/convs/0" in keys and "transformer_decoder/decoder_layers/2" in keys


def _drop_query_model():
  config = dict(TINY, num_queries=12, drop_query_keep_number=5, drop_query_seed=0,
                decoder_drop_path_rate=0.0)
  return model_lib.KMaXDeepLab(3, backbone=StandInBackbone(), **config)


def test_drop_query_training_only_and_shapes():
  model = _drop_query_model()
  images = _images(batch=2, size=33)
  out = model(images, training=True)
  assert out["class_logits"].shape == (2, 12, 4)
  assert out["mask_logits"].shape == (2, 9, 9, 12)
  assert "kept_queries" not in out
  # Exactly 12 - 5 queries per image carry the constant "dropped" logits, in every
  # output (final and deep supervision), and the same ones everywhere.
  dropped = np.all(np.asarray(out["mask_logits"]) == -1e4, axis=(1, 2))  # [B, N]
  assert (dropped.sum(axis=1) == 7).all()
  class_logits = np.asarray(out["class_logits"])
  np.testing.assert_array_equal(class_logits[dropped][:, -1], 0.0)
  np.testing.assert_array_equal(class_logits[dropped][:, :-1], -1e4)
  for aux in out["aux_outputs"]:
    aux_dropped = np.all(np.asarray(aux["mask_logits"]) == -1e4, axis=(1, 2))
    np.testing.assert_array_equal(aux_dropped, dropped)
  for assignment in out["cluster_assignments"]:
    a = np.asarray(assignment)
    for b in range(2):
      assert not np.isin(a[b], np.flatnonzero(dropped[b])).any()
  # Inference: all queries live.
  inference = model(images, training=False)
  assert not np.any(np.all(np.asarray(inference["mask_logits"]) == -1e4, axis=(1, 2)))
  assert model.get_config()["drop_query_keep_number"] == 5


@pytest.mark.slow  # XLA-compiles a tiny model's training forward: 40-90 s on 2 cores
def test_drop_query_under_xla():
  model = _drop_query_model()
  images = _images(batch=2, size=33)
  step = tf.function(lambda x: model(x, training=True), jit_compile=True)
  xla = step(tf.constant(images))
  xla_dropped = np.all(np.asarray(xla["mask_logits"]) == -1e4, axis=(1, 2))
  assert (xla_dropped.sum(axis=1) == 7).all()


def test_bfloat16_policy_model_shares_checkpoints_and_outputs_float32(tmp_path):
  keras.utils.set_random_seed(0)  # deterministic weights: no run-to-run argmax ties
  kwargs = dict(backbone="resnet50", backbone_kwargs=test_utils.TINY_RESNET_KWARGS,
                **TINY)
  fp32 = model_lib.build_model(num_classes=3, **kwargs)
  bf16 = model_lib.build_model(num_classes=3, dtype_policy="mixed_bfloat16", **kwargs)
  assert keras.config.dtype_policy().name == "float32"  # global policy restored
  images = _images(batch=1, size=65)
  ref = fp32(images, training=False)
  bf16(images, training=False)
  assert bf16.compute_dtype == "bfloat16"
  assert all(w.dtype == "float32" for w in bf16.weights)  # same checkpoint layout
  path = tf.train.Checkpoint(model=fp32).write(str(tmp_path / "ckpt"))
  tf.train.Checkpoint(model=bf16).read(path).assert_existing_objects_matched()
  out = bf16(images, training=False)
  for key in ("class_logits", "mask_logits", "pixel_embeddings"):
    assert out[key].dtype == "float32"
    scale = float(np.abs(np.asarray(ref[key])).max())
    err = float(np.abs(np.asarray(out[key]) - np.asarray(ref[key])).max())
    assert err <= 0.05 * scale + 1e-3, (key, err, scale)  # bf16: 8 mantissa bits
  # Lazily built sub-layers took the model's policy too.
  policies = {layer.dtype_policy.name for layer in bf16._flatten_layers()}  # pylint: disable=protected-access
  assert policies == {"mixed_bfloat16"}, policies


def test_dtype_policy_reaches_every_sub_layer_without_the_global_policy(monkeypatch):
  """A model constructed with `dtype=` computes in that policy everywhere, sub-layers
  created in build() included (shortcuts, decoder projections, transformer FFNs), and
  neither construction nor calls change Keras' global policy."""
  def refuse(policy):
    raise AssertionError(f"the global dtype policy was set to {policy}")

  monkeypatch.setattr(keras.config, "set_dtype_policy", refuse)
  model = model_lib.KMaXDeepLab(3, backbone="resnet50",
                                backbone_kwargs=test_utils.TINY_RESNET_KWARGS,
                                dtype="mixed_bfloat16", **TINY)
  images = _images(batch=1, size=65)
  model(images, training=True)
  out = model(images, training=False)
  assert keras.config.dtype_policy().name == "float32"
  layers = model._flatten_layers()  # pylint: disable=protected-access
  policies = {layer.name: layer.dtype_policy.name for layer in layers}
  assert set(policies.values()) == {"mixed_bfloat16"}, policies
  built_late = [n for n in policies if n in ("shortcut", "ffn1", "memory_conv3")]
  assert set(built_late) == {"shortcut", "ffn1", "memory_conv3"}, sorted(policies)
  assert out["mask_logits"].dtype == "float32"
