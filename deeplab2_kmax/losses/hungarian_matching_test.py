"""Tests for the pure-TF Hungarian matcher against scipy's linear_sum_assignment."""
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linear_sum_assignment

from deeplab2_kmax.losses.hungarian_matching import assignment_matrix
from deeplab2_kmax.losses.hungarian_matching import hungarian_matching

_XLA_MATCH = tf.function(hungarian_matching, jit_compile=True)


def _check_optimal(cost, valid, indices):
  """Asserts that indices is a valid injective matching with scipy's optimal cost."""
  for b in range(cost.shape[0]):
    slots = np.flatnonzero(valid[b])
    np.testing.assert_array_equal(indices[b][~valid[b].astype(bool)], -1)
    chosen = indices[b][slots]
    assert np.all((chosen >= 0) & (chosen < cost.shape[1]))
    assert len(set(chosen.tolist())) == len(slots), "predictions reused"
    sub = cost[b][:, slots]
    rows, cols = linear_sum_assignment(sub)
    optimum = sub[rows, cols].sum(dtype=np.float64)
    total = cost[b][chosen, slots].sum(dtype=np.float64)
    np.testing.assert_allclose(total, optimum, rtol=1e-5, atol=1e-4)


def _random_case(rng, integer_costs):
  batch = int(rng.integers(1, 4))
  num_pred = int(rng.integers(1, 13))
  num_gt = int(rng.integers(0, num_pred + 1))
  if integer_costs:  # Small range: many ties.
    cost = rng.integers(-3, 4, size=(batch, num_pred, num_gt)).astype(np.float32)
  else:
    cost = rng.normal(size=(batch, num_pred, num_gt)).astype(np.float32)
  valid = rng.random((batch, num_gt)) < 0.75
  return cost, valid


@pytest.mark.parametrize("integer_costs", [False, True])
def test_matches_scipy_on_random_rectangular_costs_eager(integer_costs):
  rng = np.random.default_rng(1 + integer_costs)
  for _ in range(60):
    cost, valid = _random_case(rng, integer_costs)
    indices = hungarian_matching(tf.constant(cost), tf.constant(valid)).numpy()
    _check_optimal(cost, valid, indices)


def test_matches_scipy_under_xla_fixed_shapes():
  # One compiled shape, many different problems (shape reuse avoids recompiles).
  rng = np.random.default_rng(7)
  for trial in range(120):
    if trial % 3 == 0:
      cost = rng.integers(0, 3, size=(4, 10, 6)).astype(np.float32)
    elif trial % 3 == 1:
      cost = rng.normal(size=(4, 10, 6)).astype(np.float32)
    else:  # Matching-like costs: -dice * prob in [-1, 0].
      cost = -(rng.random((4, 10, 6)) * rng.random((4, 1, 6))).astype(np.float32)
    valid = rng.random((4, 6)) < 0.6
    indices = _XLA_MATCH(tf.constant(cost), tf.constant(valid)).numpy()
    _check_optimal(cost, valid, indices)


def test_square_full_problem_and_hard_structure_under_xla():
  rng = np.random.default_rng(3)
  # Rank-1 costs a_i * b_j force long augmenting paths.
  a = rng.random((2, 24, 1)).astype(np.float32)
  b = rng.random((2, 1, 24)).astype(np.float32)
  for cost in (a * b, rng.random((2, 24, 24)).astype(np.float32),
               np.zeros((2, 24, 24), np.float32)):
    valid = np.ones((2, 24), bool)
    _check_optimal(cost, valid, _XLA_MATCH(cost, valid).numpy())


def test_no_segments_gives_all_minus_one():
  cost = tf.random.normal([2, 5, 4])
  valid = tf.zeros([2, 4])
  np.testing.assert_array_equal(hungarian_matching(cost, valid).numpy(), -1)
  np.testing.assert_array_equal(_XLA_MATCH(cost, valid).numpy(), -1)


def test_hand_case_and_padding_slots_are_skipped():
  # 3 predictions x 3 GT slots; slot 1 is padding with tempting zero costs.
  cost = np.array([[[5., 0., 1.],
                    [1., 0., 5.],
                    [2., 0., 2.]]], np.float32)
  valid = np.array([[1., 0., 1.]], np.float32)
  np.testing.assert_array_equal(hungarian_matching(cost, valid).numpy(),
                                [[1, -1, 0]])
  assert hungarian_matching(cost).numpy()[0].tolist() == [1, 2, 0]


def test_float_valid_mask_default_and_non_finite_costs():
  cost = np.array([[[np.inf, 0.0], [1.0, np.nan], [3.0, 2.0]]], np.float32)
  indices = hungarian_matching(cost).numpy()
  assert indices[0].tolist() == [1, 0]


def test_rejects_more_gt_slots_than_predictions():
  with pytest.raises(ValueError, match="max_segments"):
    hungarian_matching(tf.zeros([1, 2, 3]))


def test_assignment_matrix_is_one_hot_with_empty_padding_rows():
  mat = assignment_matrix(tf.constant([[2, -1, 0]]), 3).numpy()
  np.testing.assert_array_equal(mat[0], [[0, 0, 1], [0, 0, 0], [1, 0, 0]])


def test_unknown_batch_size_in_graph_mode():
  fn = tf.function(hungarian_matching, input_signature=[
      tf.TensorSpec([None, 5, 3], tf.float32), tf.TensorSpec([None, 3], tf.bool)])
  rng = np.random.default_rng(11)
  cost = rng.normal(size=(3, 5, 3)).astype(np.float32)
  valid = rng.random((3, 3)) < 0.7
  _check_optimal(cost, valid, fn(cost, valid).numpy())
