"""Tests for drop path."""

import numpy as np
import pytest

from deeplab2_kmax.layers import drop_path


def test_inference_is_identity_and_training_drops_whole_samples():
  layer = drop_path.DropPath(0.25, seed=0)
  x = np.ones((4000, 2, 3), "float32")
  np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
  y = np.asarray(layer(x, training=True))
  per_sample = y.reshape(4000, -1)
  # Each sample is either dropped entirely or kept and scaled by 1 / keep_prob.
  values = np.unique(per_sample)
  assert len(values) == 2
  np.testing.assert_allclose(values, [0.0, 1 / 0.75], rtol=1e-6)
  assert np.all(per_sample.min(1) == per_sample.max(1))
  kept = (per_sample[:, 0] > 0).mean()
  assert abs(kept - 0.75) < 0.03
  assert abs(y.mean() - 1.0) < 0.05


def test_config_and_validation():
  layer = drop_path.DropPath(0.2, seed=3)
  assert drop_path.DropPath.from_config(layer.get_config()).rate == 0.2
  with pytest.raises(ValueError):
    drop_path.DropPath(1.0)
