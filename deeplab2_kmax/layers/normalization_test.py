"""Tests for the BN factory."""

import numpy as np
import pytest

from deeplab2_kmax.layers import normalization


def test_defaults_and_overrides():
  bn = normalization.batch_norm()
  assert (bn.momentum, bn.epsilon, bn.synchronized) == (0.99, 1e-3, False)
  sync = normalization.batch_norm({"synchronized": True, "momentum": 0.9},
                                  gamma_initializer="zeros")
  assert sync.synchronized and sync.momentum == 0.9 and sync.epsilon == 1e-3
  y = sync(np.ones((2, 3), "float32"), training=True)
  np.testing.assert_array_equal(np.asarray(y), np.zeros((2, 3)))  # zero γ
  with pytest.raises(ValueError, match="Unknown norm_config"):
    normalization.resolve_norm_config({"momentom": 0.9})


def test_activations():
  x = np.array([-1.0, 0.0, 2.0], "float32")
  np.testing.assert_allclose(np.asarray(normalization.get_activation("relu")(x)),
                             [0, 0, 2])
  gelu = np.asarray(normalization.get_activation("gelu")(x))
  np.testing.assert_allclose(gelu, [-0.158655, 0.0, 1.954500], atol=1e-5)  # exact erf
  np.testing.assert_array_equal(normalization.get_activation(None)(x), x)
