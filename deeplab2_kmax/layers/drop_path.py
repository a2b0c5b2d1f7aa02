"""Drop path (stochastic depth) on residual branches."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class DropPath(keras.layers.Layer):
  """Zeroes a residual branch for a random subset of samples during training.

  Kept samples are scaled by 1 / keep_prob, so the expectation is unchanged. At
  inference (or with rate 0) the input is returned unchanged.

  Args:
    rate: drop probability (1 - keep_prob); e.g. 0.2 for keep prob 0.8.
    seed: optional seed for the random generator.
  """

  def __init__(self, rate: float = 0.0, seed=None, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"DropPath rate must be in [0, 1), got {rate}")
    self.rate = float(rate)
    self.seed = seed
    self._seed_generator = keras.random.SeedGenerator(seed)

  def call(self, x, training=False):
    if not training or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
    random = keras.random.uniform(shape, dtype=x.dtype, seed=self._seed_generator)
    mask = ops.floor(keep + random)
    return x * mask / keep

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({"rate": self.rate, "seed": self.seed})
    return config
