"""Tests for the BN factory."""

import numpy as np
import pytest

from deeplab2_kmax.kernels import batch_norm as batch_norm_kernels
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


def _paired_layers(shape, axis, rng):
  """Our BN and keras.layers.BatchNormalization with the same random weights."""
  import keras  # pylint: disable=g-import-not-at-top
  ours = normalization.batch_norm({"momentum": 0.9}, axis=axis)
  ref = keras.layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-3)
  channels = shape[axis]
  gamma = rng.normal(1.0, 0.3, channels).astype("float32")
  beta = rng.normal(0.0, 0.3, channels).astype("float32")
  for layer in (ours, ref):
    layer.build(shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    layer.moving_mean.assign(beta)
    layer.moving_variance.assign(gamma ** 2)
  return ours, ref


@pytest.mark.parametrize("shape,axis", [((2, 9, 7, 5), -1), ((2, 5, 9, 7), 1),
                                        ((2, 6, 5), -1), ((2, 4, 6), 1),
                                        ((3, 5), -1), ((1, 1, 1, 4), -1)])
@pytest.mark.parametrize("compiled", [False, True])
def test_fused_training_path_matches_keras(shape, axis, compiled):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  ours, ref = _paired_layers(shape, axis, rng)
  x = tf.constant(rng.normal(2.0, 3.0, shape).astype("float32"))
  upstream = tf.constant(rng.normal(size=shape).astype("float32"))

  def step(layer):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
      loss = tf.reduce_sum(y * upstream)
    return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta])

  results = []
  for layer in (ours, ref):
    fn = tf.function(lambda l=layer: step(l)) if compiled else (lambda l=layer: step(l))
    out = fn()
    out += [tf.identity(layer.moving_mean), tf.identity(layer.moving_variance),
            layer(x, training=False)]
    results.append(out)
  assert batch_norm_kernels.applies(ours, x, True, None)
  for got, want in zip(*results):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_fused_training_path_bfloat16_inputs():
  """bf16 activations go into the fused op as they are: the same numbers as casting
  them to float32 first (statistics in float32), bf16 output, float32 moving stats."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  shape = (2, 9, 7, 16)
  x = tf.constant(rng.normal(2.0, 3.0, shape).astype("float32"))
  upstream = tf.constant(rng.normal(size=shape).astype("float32"))
  results = []
  for dtype in ("mixed_bfloat16", "float32"):
    layer = normalization.BatchNormalization(dtype=dtype)
    layer.build(shape)
    inputs = tf.cast(tf.cast(x, tf.bfloat16), tf.float32 if dtype == "float32" else
                     tf.bfloat16)
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      y = layer(inputs, training=True)
      loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
    results.append((y, grads, layer.moving_mean.numpy(), layer.moving_variance.numpy()))
  (y16, g16, mean16, var16), (y32, g32, mean32, var32) = results
  assert y16.dtype == tf.bfloat16 and g16[0].dtype == tf.bfloat16
  assert batch_norm_kernels.applies(layer, x, True, None)
  np.testing.assert_array_equal(mean16, mean32)   # float32 statistics of the same values
  np.testing.assert_allclose(var16, var32, rtol=1e-6)
  np.testing.assert_allclose(tf.cast(y16, tf.float32).numpy(), y32.numpy(),
                             rtol=1e-2, atol=2e-2)
  for got, want in zip(g16, g32):
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), want.numpy(),
                               rtol=2e-2, atol=2e-2 * np.abs(want.numpy()).max())


def test_fused_layer_keeps_keras_layout():
  import keras  # pylint: disable=g-import-not-at-top
  bn = normalization.batch_norm(name="bn", gamma_initializer="zeros")
  bn.build((None, 4, 4, 3))
  ref = keras.layers.BatchNormalization(name="bn", momentum=0.99, epsilon=1e-3,
                                        gamma_initializer="zeros")
  ref.build((None, 4, 4, 3))
  assert isinstance(bn, keras.layers.BatchNormalization)
  assert [v.path for v in bn.weights] == [v.path for v in ref.weights]
  assert bn.get_config() == ref.get_config()
  assert (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance) == tuple(bn.weights)
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(bn))
  assert type(clone) is type(bn) and clone.get_config() == bn.get_config()


def test_fallbacks_use_keras_path():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = tf.ones((2, 3, 4, 5))
  sync = normalization.batch_norm({"synchronized": True})
  sync.build(x.shape)
  assert not batch_norm_kernels.applies(sync, x, True, None)
  plain = normalization.batch_norm(axis=2)
  plain.build(x.shape)
  assert not batch_norm_kernels.applies(plain, x, True, None)
  plain.trainable = False  # frozen BN runs in inference mode, as in Keras
  assert not batch_norm_kernels.applies(plain, x, True, None)
  assert not batch_norm_kernels.applies(normalization.batch_norm(), x, False, None)


@pytest.mark.parametrize("compiled", [False, True])
def test_gelu_gradient_matches_autodiff(compiled):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = tf.constant(np.linspace(-6.0, 6.0, 241, dtype=np.float32).reshape(1, 241, 1))

  def reference(v):
    return 0.5 * v * (1.0 + tf.math.erf(v * 0.7071067811865476))

  def value_and_grad(fn):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = fn(x)
      loss = tf.reduce_sum(y * tf.cos(x))
    return y, tape.gradient(loss, x)

  run = tf.function(value_and_grad, jit_compile=True) if compiled else value_and_grad
  got, want = run(normalization.gelu), value_and_grad(reference)
  if compiled:  # XLA's erf is its own approximation
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), atol=2e-6)
  else:  # the forward is the same expression
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
  np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(got[0]),
                             np.asarray(tf.nn.gelu(x, approximate=False)), atol=1e-6)
