"""Tests for inference-time BN folding: folded layers equal conv → BN → act exactly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.kernels import bn_folding
from deeplab2_kmax.layers import convolutions
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import test_utils


def test_folded_affine_matches_numpy_bn_and_respects_modes():
  rng = np.random.default_rng(0)
  bn = normalization.batch_norm()
  bn.build((None, 6))
  test_utils.randomize_batch_norms(bn, rng)
  x = rng.normal(size=(4, 6)).astype("float32")
  scale, shift = bn_folding.folded_affine(bn, training=False)
  np.testing.assert_allclose(x * np.asarray(scale) + np.asarray(shift),
                             test_utils.numpy_bn(x, bn), atol=1e-5)
  assert bn_folding.folded_affine(bn, training=True) is None
  bn.trainable = False  # a frozen BN uses its moving statistics even in training
  assert bn_folding.folded_affine(bn, training=True) is not None


def _reference_conv_bn(layer, x, training):
  """The unfolded computation, built from the layer's own sub-layers."""
  if layer.strides != 1:
    x = convolutions._symmetric_pad(x, layer.kernel_size, layer.dilation_rate)  # pylint: disable=protected-access
  y = layer.bn(layer.conv(x), training=training)
  return layer._act(y)  # pylint: disable=protected-access


@pytest.mark.parametrize("kwargs,shape", [
    (dict(filters=5, kernel_size=1, activation="relu"), (2, 6, 6, 3)),
    (dict(filters=5, kernel_size=3, strides=2, activation="gelu"), (1, 7, 9, 3)),
    (dict(filters=4, kernel_size=3, dilation_rate=2), (1, 8, 8, 3)),
    # Atrous conv on a map smaller than the rate: the centre-tap 1x1 path.
    (dict(filters=4, kernel_size=3, dilation_rate=6, activation="relu"), (1, 5, 5, 3)),
])
def test_conv_bn_folded_equals_unfolded(kwargs, shape):
  rng = np.random.default_rng(1)
  layer = convolutions.ConvBN(**kwargs)
  x = rng.normal(size=shape).astype("float32")
  layer(x)
  test_utils.randomize_batch_norms(layer, rng)
  folded = np.asarray(layer(x, training=False))
  np.testing.assert_allclose(folded, np.asarray(_reference_conv_bn(layer, x, False)),
                             rtol=1e-5, atol=1e-5)
  # Training keeps the ordinary BN (batch statistics).
  np.testing.assert_allclose(np.asarray(layer(x, training=True)),
                             np.asarray(_reference_conv_bn(layer, x, True)),
                             rtol=1e-5, atol=1e-5)


def test_folded_conv_has_fewer_full_size_ops_in_the_graph():
  layer = convolutions.ConvBN(8, 1, activation="relu")
  x = tf.zeros((1, 16, 16, 4))
  layer(x)
  graph = tf.function(lambda t: layer(t, training=False)).get_concrete_function(
      x).graph
  full_size_elementwise = [
      op for op in graph.get_operations()
      if op.type in ("Mul", "AddV2", "Sub") and op.outputs and
      op.outputs[0].shape.rank == 4 and op.outputs[0].shape[1] == 16]
  assert len(full_size_elementwise) == 1  # the folded bias add only


def test_depthwise_separable_folded_equals_unfolded():
  rng = np.random.default_rng(2)
  layer = convolutions.DepthwiseSeparableConv(6, 5, activation="gelu")
  x = rng.normal(size=(2, 9, 9, 4)).astype("float32")
  layer(x)
  test_utils.randomize_batch_norms(layer, rng)
  y = layer.depthwise_bn(layer.depthwise(x), training=False)
  ref = layer.pointwise.bn(layer.pointwise.conv(normalization.gelu(y)), training=False)
  np.testing.assert_allclose(np.asarray(layer(x, training=False)),
                             np.asarray(normalization.gelu(ref)), rtol=1e-5, atol=1e-5)


def test_dense_bn_folded_equals_unfolded_and_gradients_flow_in_training():
  rng = np.random.default_rng(3)
  layer = convolutions.DenseBN(7, activation="relu")
  x = rng.normal(size=(2, 5, 3)).astype("float32")
  layer(x)
  test_utils.randomize_batch_norms(layer, rng)
  ref = np.maximum(np.asarray(layer.bn(layer.dense(x), training=False)), 0)
  np.testing.assert_allclose(np.asarray(layer(x, training=False)), ref,
                             rtol=1e-5, atol=1e-5)
  xt = tf.constant(x)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(xt, training=False) ** 2)
  grads = tape.gradient(loss, layer.trainable_weights)
  assert all(g is not None for g in grads)  # folded path differentiates into γ, β too
  assert isinstance(layer.bn, keras.layers.BatchNormalization)


def test_whole_model_folded_inference_equals_per_bn_inference(monkeypatch):
  """Every folded site together (convs, axial attention, heads) on a tiny model."""
  from deeplab2_kmax import model as model_lib  # pylint: disable=g-import-not-at-top
  # Seeded weights: the k-means argmax can flip on a near-tie between two equal
  # computations rounded differently, which an unseeded run hits now and then.
  keras.utils.set_random_seed(0)
  model = model_lib.build_model(
      num_classes=3, backbone="resnet50",
      backbone_kwargs=test_utils.TINY_RESNET_KWARGS, **test_utils.TINY_MODEL_KWARGS)
  rng = np.random.default_rng(4)
  images = rng.uniform(0, 255, (1, 65, 65, 3)).astype("float32")
  model(images, training=False)
  test_utils.randomize_batch_norms(model, rng)
  folded = model(images, training=False)
  # Every folding site takes its per-BN path; the BNs still get training=False, so
  # they normalize with their moving statistics.
  monkeypatch.setattr(bn_folding, "uses_batch_statistics", lambda bn, training: True)
  reference = model(images, training=False)
  for key in ("class_logits", "mask_logits", "pixel_embeddings"):
    np.testing.assert_allclose(np.asarray(folded[key]), np.asarray(reference[key]),
                               rtol=2e-4, atol=2e-4, err_msg=key)
