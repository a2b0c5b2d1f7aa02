"""mask_upsampling: subset-independent interpolation bits and the exact candidate argmax."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax import mask_upsampling as mu


def _logits(rng, shape, kind):
  x = rng.normal(size=shape).astype(np.float32)
  if kind == "wide":  # magnitudes from 1e-3 to 1e3: rounding differs between kernels
    x *= (10.0 ** rng.uniform(-3, 3, size=shape)).astype(np.float32)
  elif kind == "bf16":  # what a mixed_bfloat16 model emits: many exact ties
    x = tf.cast(tf.cast(x * 0.01, tf.bfloat16), tf.float32).numpy()
  elif kind == "coarse":  # few distinct values: ties between masks at every corner
    x = np.round(x).astype(np.float32)
  elif kind == "sharp":  # one dominant mask per region: a single candidate per cell
    x *= 20.0
  return x


def test_interpolation_bits_do_not_depend_on_the_subset_or_layout():
  rng = np.random.default_rng(0)
  corners = _logits(rng, (300, 4, 37), "wide")
  dense = mu.interpolate_cells(tf.constant(corners)).numpy()  # [300, 16, 37]
  # The same corners as a ragged [Q, 4] list, in a shuffled order, and subsets.
  rows = corners.transpose(0, 2, 1).reshape(-1, 4)
  perm = rng.permutation(len(rows))
  ragged = mu.interpolate_cells(tf.constant(rows[perm]), axis=-1).numpy()
  want = dense.transpose(0, 2, 1).reshape(-1, 16)[perm]
  np.testing.assert_array_equal(ragged, want)
  for count in (1, 3, 17):
    sub = mu.interpolate_cells(tf.constant(corners[:count, :, :5])).numpy()
    np.testing.assert_array_equal(sub, dense[:count, :, :5])
  # ... and under XLA (which may fuse multiply-adds).
  xla = tf.function(mu.interpolate_cells, jit_compile=True)(tf.constant(corners)).numpy()
  np.testing.assert_array_equal(xla, dense)


def test_interpolation_is_bilinear_inside_the_corner_range_and_exact_at_corners():
  rng = np.random.default_rng(1)
  corners = _logits(rng, (200, 4, 8), "wide").astype(np.float64)
  got = mu.interpolate_cells(tf.constant(corners.astype(np.float32))).numpy()
  a, b = np.meshgrid(np.arange(4) / 4, np.arange(4) / 4, indexing="ij")
  w = np.stack([(1 - a) * (1 - b), (1 - a) * b, a * (1 - b), a * b], -1).reshape(16, 4)
  want = np.einsum("kc,pcn->pkn", w, corners)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(corners).max())
  assert (got >= corners.min(1, keepdims=True).astype(np.float32)).all()
  assert (got <= corners.max(1, keepdims=True).astype(np.float32)).all()
  np.testing.assert_array_equal(got[:, 0], corners[:, 0].astype(np.float32))


def test_upsampling_matches_tf_align_corners_resize():
  grid = np.random.default_rng(2).normal(size=(2, 9, 7, 5)).astype(np.float32)
  want = tf.compat.v1.image.resize_bilinear(grid, (33, 25), align_corners=True).numpy()
  np.testing.assert_allclose(mu.upsample_mask_logits(grid).numpy(), want, atol=1e-5)


@pytest.mark.parametrize("kind", ["normal", "wide", "bf16", "coarse", "sharp"])
def test_cell_argmax_equals_argmax_of_the_upsampled_logits(kind):
  rng = np.random.default_rng(3)
  logits = _logits(rng, (2, 9, 11, 24), kind)
  if kind == "sharp":
    logits = tf.image.resize(logits[:, ::3, ::3], (9, 11), method="bicubic").numpy()
  grid = mu.pad_grid(tf.constant(logits))
  fn = tf.function(lambda g: mu.cell_argmax(g, tf.argmax(g, -1, output_type=tf.int32)))
  got = mu.cells_to_pixels(fn(grid)).numpy()[:, :33, :41]
  up = mu.upsample_mask_logits(logits).numpy()
  np.testing.assert_array_equal(got, up.argmax(-1))  # first index among ties, as numpy
  if kind == "coarse":  # ties did occur
    top = np.sort(up, -1)
    assert (top[..., -1] == top[..., -2]).mean() > 0.05


# ------------------------------------------------------------------ other strides
def test_stage_matrices_are_midpoints_or_copies_and_stride4_is_unchanged():
  assert [(m.shape, a) for m, a in mu.cell_stages(4)] == [
      ((2, 4), True), ((8, 6), False), ((4, 8), True), ((16, 12), False)]
  for s in (1, 2, 4, 8):
    for m, _ in mu.cell_stages(s):
      for row in m:
        nonzero = sorted(row[row != 0].tolist())
        assert nonzero in ([1.0], [0.5, 0.5]), nonzero
  for bad in (0, 3, 6, 2.5):
    with pytest.raises(ValueError, match="power of two"):
      mu.check_stride(bad)


@pytest.mark.parametrize("stride", [1, 2, 8])
def test_other_strides_bilinear_subset_independent_and_match_tf_resize(stride):
  rng = np.random.default_rng(4)
  corners = _logits(rng, (120, 4, 9), "wide")
  dense = mu.interpolate_cells(tf.constant(corners), stride=stride).numpy()
  assert dense.shape == (120, stride * stride, 9)
  rows = corners.transpose(0, 2, 1).reshape(-1, 4)
  perm = rng.permutation(len(rows))
  ragged = mu.interpolate_cells(tf.constant(rows[perm]), axis=-1, stride=stride).numpy()
  np.testing.assert_array_equal(
      ragged, dense.transpose(0, 2, 1).reshape(-1, stride * stride)[perm])
  np.testing.assert_array_equal(
      mu.interpolate_cells(tf.constant(corners[:3, :, :2]), stride=stride).numpy(),
      dense[:3, :, :2])
  xla = tf.function(lambda c: mu.interpolate_cells(c, stride=stride),
                    jit_compile=True)(tf.constant(corners)).numpy()
  np.testing.assert_array_equal(xla, dense)
  a, b = np.meshgrid(np.arange(stride) / stride, np.arange(stride) / stride, indexing="ij")
  w = np.stack([(1 - a) * (1 - b), (1 - a) * b, a * (1 - b), a * b], -1).reshape(-1, 4)
  want = np.einsum("kc,pcn->pkn", w, corners.astype(np.float64))
  np.testing.assert_allclose(dense, want, rtol=1e-6, atol=1e-6 * np.abs(corners).max())
  assert (dense >= corners.min(1, keepdims=True)).all()
  assert (dense <= corners.max(1, keepdims=True)).all()
  grid = rng.normal(size=(2, 9, 7, 5)).astype(np.float32)
  size = (stride * 8 + 1, stride * 6 + 1)
  up = mu.upsample_mask_logits(grid, stride).numpy()
  assert up.shape == (2,) + size + (5,)
  want = tf.compat.v1.image.resize_bilinear(grid, size, align_corners=True).numpy()
  np.testing.assert_allclose(up, want, atol=1e-5)
  np.testing.assert_array_equal(up[:, ::stride, ::stride], grid)


@pytest.mark.parametrize("kind", ["normal", "bf16", "coarse", "sharp"])
def test_stride2_cell_argmax_equals_argmax_of_the_upsampled_logits(kind):
  rng = np.random.default_rng(5)
  logits = _logits(rng, (2, 9, 11, 24), kind)
  if kind == "sharp":
    logits = tf.image.resize(logits[:, ::3, ::3], (9, 11), method="bicubic").numpy()
  grid = mu.pad_grid(tf.constant(logits))
  got = mu.cells_to_pixels(
      mu.cell_argmax(grid, tf.argmax(grid, -1, output_type=tf.int32), 2), 2).numpy()
  np.testing.assert_array_equal(got[:, :17, :21],
                                mu.upsample_mask_logits(logits, 2).numpy().argmax(-1))


def test_crop_grid_keeps_the_points_covering_the_crop():
  logits = tf.zeros([1, 9, 9, 2])
  for s, size, points in ((2, 1, 1), (2, 2, 2), (2, 3, 2), (2, 4, 3), (4, 5, 2), (4, 6, 3),
                          (1, 4, 4)):
    grid, h, w = mu.crop_grid(logits, (s * 8 + 1, s * 8 + 1), (size, size), s)
    assert grid.shape[1:3] == (points, points) and int(h) == int(w) == size
