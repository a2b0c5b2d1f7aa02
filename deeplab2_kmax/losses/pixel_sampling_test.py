"""Gumbel-top-k pixel sampling: determinism, masking, small-segment bias."""
import numpy as np
import tensorflow as tf

from deeplab2_kmax.losses.pixel_sampling import hash_uniform
from deeplab2_kmax.losses.pixel_sampling import sample_pixels_by_inverse_area


def _toy():
  # 100 pixels: a 90-pixel segment, a 5-pixel segment, 5 void pixels.
  area = np.array([90.0] * 90 + [5.0] * 5 + [0.0] * 5, np.float32)
  inside = (area > 0).astype(np.float32)
  inverse = 100.0 / np.maximum(area, 1.0)
  return tf.constant(inverse[None]), tf.constant(inside[None])


def test_seeded_sampling_is_deterministic_distinct_and_avoids_void():
  inverse, inside = _toy()
  a = sample_pixels_by_inverse_area(inverse, inside, 40, 1.5, seed=[3, 4])
  b = sample_pixels_by_inverse_area(inverse, inside, 40, 1.5, seed=[3, 4])
  c = sample_pixels_by_inverse_area(inverse, inside, 40, 1.5, seed=[3, 5])
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert a.numpy().tolist() != c.numpy().tolist()
  assert len(set(a.numpy()[0].tolist())) == 40
  assert a.numpy().max() < 95                      # never a void pixel
  # Asking for more than the 95 segment pixels: void pixels come last.
  every = sample_pixels_by_inverse_area(inverse, inside, 100, 1.5, seed=[0, 0])
  assert sorted(every.numpy()[0, 95:].tolist()) == [95, 96, 97, 98, 99]


def test_temperature_biases_towards_small_segments():
  inverse, inside = _toy()
  small_hits = {0.0: 0, 1.5: 0}
  for temperature in small_hits:
    for trial in range(30):
      idx = sample_pixels_by_inverse_area(inverse, inside, 10, temperature,
                                          seed=[trial, 1]).numpy()
      small_hits[temperature] += int(((idx >= 90) & (idx < 95)).sum())
  # Uniform over 95 pixels: ~5% small; with temperature 1.5 the small pixels have
  # weight 18^1.5 = 76x each, so almost every draw takes all 5.
  assert small_hits[0.0] < 60
  assert small_hits[1.5] > 120


def test_unseeded_sampling_runs_under_xla():
  inverse, inside = _toy()
  fn = tf.function(lambda i, s: sample_pixels_by_inverse_area(i, s, 8, 1.5),
                   jit_compile=True)
  assert fn(inverse, inside).shape == (1, 8)


def test_hash_noise_is_uniform_and_identical_under_xla():
  shape = tf.zeros([4, 5000])
  eager = hash_uniform(shape, tf.constant([7, 1], tf.int64)).numpy()
  compiled = tf.function(hash_uniform, jit_compile=True)(
      shape, tf.constant([7, 1], tf.int64)).numpy()
  np.testing.assert_array_equal(eager, compiled)
  assert 0.0 < eager.min() and eager.max() < 1.0
  hist, _ = np.histogram(eager, bins=10, range=(0, 1))
  assert np.all(np.abs(hist - 2000) < 200), hist   # ~4.5 sigma
  other = hash_uniform(shape, tf.constant([7, 2], tf.int64)).numpy()
  assert abs(np.corrcoef(eager.ravel(), other.ravel())[0, 1]) < 0.02
