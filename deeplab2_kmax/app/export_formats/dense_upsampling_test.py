"""dense_upsampling equals mask_upsampling.upsample_mask_logits bit for bit."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax import mask_upsampling
from deeplab2_kmax.app.export_formats import dense_upsampling


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_bitwise_equal_to_the_cell_matmul_form(stride):
  rng = np.random.default_rng(stride)
  for shape in [(2, 5, 7, 6), (1, 1, 3, 4), (1, 9, 1, 3), (1, 4, 4, 1)]:
    # Magnitudes from 1e-3 to 1e3: rounding differences would show.
    x = (rng.normal(size=shape) * 10 ** rng.uniform(-3, 3, size=shape)).astype(np.float32)
    want = mask_upsampling.upsample_mask_logits(tf.constant(x), stride).numpy()
    got = dense_upsampling.upsample_mask_logits(tf.constant(x), stride).numpy()
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_phase_layout_and_coordinates():
  s, hs, ws = 4, 3, 5
  x = tf.random.stateless_normal([2, hs, ws, 3], seed=[3, 4])
  phases = dense_upsampling.upsample_phases(x, s)  # [B, s², Hs, Ws, N]
  assert phases.shape == (2, s * s, hs, ws, 3)
  full = mask_upsampling.upsample_mask_logits(x, s).numpy()  # [B, 9, 17, 3]
  rows, cols = (t.numpy() for t in dense_upsampling.phase_coordinates(hs, ws, s))
  for k in range(s * s):
    for i in range(hs):
      for j in range(ws):
        y, x_ = rows[k, i, 0], cols[k, 0, j]
        if y < full.shape[1] and x_ < full.shape[2]:
          np.testing.assert_array_equal(phases[:, k, i, j].numpy(), full[:, y, x_])
  ids = tf.reshape(tf.range(2 * s * s * hs * ws), [2, s * s, hs, ws])
  pixels = dense_upsampling.phases_to_pixels(ids, s).numpy()
  assert pixels.shape == (2, s * hs, s * ws)
  for k in range(s * s):
    np.testing.assert_array_equal(
        pixels[:, rows[k, :, 0]][:, :, cols[k, 0, :]], ids[:, k].numpy())


def test_dynamic_batch_static_grid():
  fn = tf.function(lambda x: dense_upsampling.upsample_mask_logits(x, 4),
                   input_signature=[tf.TensorSpec([None, 3, 5, 2], tf.float32)])
  assert fn(tf.zeros([3, 3, 5, 2])).shape == (3, 9, 17, 2)
  with pytest.raises(ValueError, match="static"):
    tf.function(lambda x: dense_upsampling.upsample_mask_logits(x, 4)).get_concrete_function(
        tf.TensorSpec([1, None, 5, 2], tf.float32))
