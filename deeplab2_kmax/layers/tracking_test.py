"""Sub-layers kept in lists must be in a layer's own checkpoint (Keras 3 + tf.train)."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax import backbones
from deeplab2_kmax.layers import tracking
from deeplab2_kmax import pixel_decoder
from deeplab2_kmax import semantic_decoder
from deeplab2_kmax import transformer_decoder

TINY_RESNET = dict(depths=(1, 1, 2, 1), width_multiplier=0.125,
                   stem_width_multiplier=0.25)


def _image(size=33, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (1, size, size, 3)).astype(
      "float32")


def _saved_variable_count(prefix):
  return len([n for n in tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
              if n.endswith("VARIABLE_VALUE") and not n.startswith("save_counter")])


def _round_trip(make, run, tmp_path):
  """Saves make() alone, restores into a fresh make(); every variable must match."""
  layer = make()
  run(layer)
  # Guards future layers: any (sub-)layer keeping layers in lists/dicts must use the
  # mixin (otherwise its own checkpoint would miss them).
  for sub in layer._flatten_layers(include_self=True):  # pylint: disable=protected-access
    if tracking.direct_list_held_layers(sub):
      assert isinstance(sub, tracking.TrackListHeldLayers), type(sub).__name__
  rng = np.random.default_rng(1)
  for w in layer.weights:  # distinguish every value from a fresh initialization
    w.assign(rng.normal(size=w.shape).astype(w.dtype))
  prefix = tf.train.Checkpoint(layer=layer).save(str(tmp_path / "ckpt"))
  assert _saved_variable_count(prefix) == len(layer.weights)
  fresh = make()
  run(fresh)
  tf.train.Checkpoint(layer=fresh).restore(prefix).assert_consumed()
  assert len(fresh.weights) == len(layer.weights)
  for a, b in zip(layer.weights, fresh.weights):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


@pytest.mark.parametrize("name,kwargs", [
    ("resnet50", TINY_RESNET),
    ("axial_resnet50", TINY_RESNET),  # depths (1, 1, 2, 1): one axial block at 16
    ("convnext_tiny", dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))),
])
def test_backbone_checkpoint_alone_is_complete(name, kwargs, tmp_path):
  _round_trip(lambda: backbones.build_backbone(name, **kwargs),
              lambda b: b(_image(), training=False), tmp_path)


def _endpoints(seed=0):
  rng = np.random.default_rng(seed)
  return {f"res{level}": rng.normal(size=(1, s, s, 8)).astype("float32")
          for level, s in zip((2, 3, 4, 5), (9, 5, 3, 2))}


def test_pixel_decoder_checkpoint_alone_is_complete(tmp_path):
  _round_trip(lambda: pixel_decoder.KMaXPixelDecoder(
      dims=(8, 8, 4, 4), num_blocks=(1, 2, 1, 1), num_heads=2),
              lambda d: d(_endpoints()), tmp_path)


def test_decoders_checkpoint_alone_is_complete(tmp_path):
  _round_trip(lambda: semantic_decoder.SemanticDecoder(
      3, aspp_channels=8, decoder_channels=8, low_level_channels=(4, 4),
      head_channels=8), lambda d: d(_endpoints(), training=False), tmp_path / "sem")
  feats = [np.ones((1, s, s, 8), "float32") for s in (2, 3, 5)]
  _round_trip(lambda: transformer_decoder.KMaXTransformerDecoder(
      3, num_queries=4, num_layers_per_stride=(1, 1, 1), channels=8,
      bottleneck_channels=8, key_depth=4, value_depth=8, num_heads=2,
      ffn_channels=8, embedding_dim=4, pixel_head_channels=8),
              lambda d: d(feats), tmp_path / "dec")
