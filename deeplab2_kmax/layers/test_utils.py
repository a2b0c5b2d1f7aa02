"""Helpers shared by the layer/model tests (numpy references for BN, randomized stats)."""

import numpy as np

# The tiny model of the tests (same architecture, small widths), and a tiny ResNet-50
# backbone for it: build_model(num_classes, backbone="resnet50",
# backbone_kwargs=TINY_RESNET_KWARGS, **TINY_MODEL_KWARGS).
TINY_MODEL_KWARGS = dict(
    num_queries=16, pixel_decoder_dims=(16, 8, 8, 8), axial_num_heads=2,
    pixel_decoder_blocks=(1, 1, 1, 1), decoder_layers=(1, 1, 1),
    decoder_channels=32, decoder_key_depth=16, decoder_value_depth=32,
    decoder_num_heads=2, ffn_channels=64, embedding_dim=16,
    pixel_head_channels=32, semantic_channels=16,
    semantic_low_level_channels=(8, 8))
TINY_RESNET_KWARGS = {"depths": (1, 1, 1, 1), "width_multiplier": 0.125,
                      "stem_width_multiplier": 0.25}


def randomize_batch_norms(layer, rng):
  """Sets every BN/LN statistic and affine weight of `layer` to random values."""
  for w in layer.weights:
    path = w.path
    if "moving_variance" in path or "gamma" in path:
      w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    elif "moving_mean" in path or "beta" in path:
      w.assign(rng.normal(0, 0.2, w.shape).astype("float32"))


def numpy_bn(x, bn_layer, axis=-1):
  """Inference-mode batch norm of `x` with the weights of a keras BN layer."""
  gamma, beta, mean, var = (np.asarray(bn_layer.gamma), np.asarray(bn_layer.beta),
                            np.asarray(bn_layer.moving_mean),
                            np.asarray(bn_layer.moving_variance))
  shape = [1] * x.ndim
  shape[axis] = -1
  r = lambda a: a.reshape(shape)
  return (x - r(mean)) / np.sqrt(r(var) + bn_layer.epsilon) * r(gamma) + r(beta)


def count_params(layer):
  return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
