"""Exact minimum-cost bipartite matching (Hungarian algorithm) in pure TensorFlow.

kMaX-DeepLab matches its N predicted masks to the M ground-truth segments of every
image inside the training step, so the matcher must be made of TensorFlow ops only
(no `numpy_function`, `py_function` or scipy) and compile under
`tf.function(jit_compile=True)`.

Algorithm: the shortest-augmenting-path form of the Hungarian method (Jonker-Volgenant;
the variant described by Crouse, "On implementing 2D rectangular assignment
algorithms", IEEE TAES 2016, which scipy's `linear_sum_assignment` also uses). Ground-
truth segments are the rows, predictions the columns. Rows are added one at a time; for
each new row a Dijkstra search over reduced costs `c[i, j] - u[i] - v[j]` finds the
cheapest augmenting path to a free column, the dual variables `u`, `v` are updated so
that all reduced costs stay non-negative, and the path is flipped. After every valid
row is added the assignment is optimal (exact up to float rounding; integer costs are
exact). Each row costs O(rows visited) vectorized steps of O(N) work, so the whole
matching is O(M^2 N) work in O(M^2) small sequential steps.

Batching: all examples run the same `tf.while_loop` in lock-step; an example that has
finished its current search simply stops updating its state (masked updates), so the
loop shapes are static and the graph is XLA-friendly. Padding ground-truth slots
(`valid == 0`) are moved behind the real ones and never added; they get index -1.
"""
from typing import Optional

import tensorflow as tf


def _first_true(mask: tf.Tensor) -> tf.Tensor:
  """Index of the first True along the last axis (0 when there is none)."""
  return tf.argmax(tf.cast(mask, tf.int32), axis=-1, output_type=tf.int32)


def _set_at(values: tf.Tensor, index: tf.Tensor, new: tf.Tensor,
            enabled: tf.Tensor) -> tf.Tensor:
  """values[b, index[b]] = new[b] for the examples b where enabled[b]."""
  depth = values.shape[-1]
  hit = tf.logical_and(tf.one_hot(index, depth, on_value=True, off_value=False),
                       enabled[:, None])
  return tf.where(hit, tf.cast(new, values.dtype)[:, None], values)


def _solve_rows(cost: tf.Tensor, num_rows: tf.Tensor) -> tf.Tensor:
  """Assigns rows [0, num_rows[b]) of cost[b] ([B, R, N], R <= N) to distinct columns.

  Returns col4row [B, R] int32, -1 for rows >= num_rows[b].
  """
  num_r, num_c = cost.shape[1], cost.shape[2]
  dtype = cost.dtype
  batch = cost.shape[0] if cost.shape[0] is not None else tf.shape(cost)[0]
  inf = tf.constant(float("inf"), dtype)
  row_ids = tf.range(num_r, dtype=tf.int32)[None, :]

  def search(r, u, v, row4col):
    """Dijkstra search from row r; returns the sink column, path and distances."""
    searching = r < num_rows
    init = (
        tf.fill([batch], r),                       # current row i
        tf.zeros([batch], dtype),                  # min_val
        tf.fill([batch], -1),                      # sink column
        searching,                                 # still searching
        tf.fill([batch, num_c], inf),              # shortest distance per column
        tf.fill([batch, num_c], -1),               # path: row preceding the column
        tf.zeros([batch, num_r], tf.bool),         # visited rows
        tf.zeros([batch, num_c], tf.bool),         # visited columns
    )

    def cond(i, min_val, sink, active, *_):
      return tf.reduce_any(active)

    def body(i, min_val, sink, active, shortest, path, seen_r, seen_c):
      seen_r = tf.logical_or(
          seen_r, tf.logical_and(tf.one_hot(i, num_r, on_value=True,
                                            off_value=False), active[:, None]))
      cost_row = tf.gather(cost, i, batch_dims=1)                     # [B, N]
      u_i = tf.gather(u, i, batch_dims=1)
      reduced = min_val[:, None] + cost_row - u_i[:, None] - v
      better = active[:, None] & ~seen_c & (reduced < shortest)
      path = tf.where(better, i[:, None], path)
      shortest = tf.where(better, reduced, shortest)
      key = tf.where(seen_c, inf, shortest)
      lowest = tf.reduce_min(key, axis=-1)
      tied = tf.equal(key, lowest[:, None])
      tied_free = tied & (row4col < 0)
      # Among equally short columns prefer a free one: the search ends sooner.
      j = tf.where(tf.reduce_any(tied_free, axis=-1), _first_true(tied_free),
                   _first_true(tied))
      min_val = tf.where(active, lowest, min_val)
      seen_c = tf.logical_or(
          seen_c, tf.logical_and(tf.one_hot(j, num_c, on_value=True,
                                            off_value=False), active[:, None]))
      owner = tf.gather(row4col, j, batch_dims=1)
      is_free = owner < 0
      sink = tf.where(active & is_free, j, sink)
      i = tf.where(active & ~is_free, owner, i)
      active = active & ~is_free
      return i, min_val, sink, active, shortest, path, seen_r, seen_c

    _, min_val, sink, _, shortest, path, seen_r, seen_c = tf.while_loop(
        cond, body, init, maximum_iterations=num_r + 1)
    return searching, min_val, sink, shortest, path, seen_r, seen_c

  def outer_body(r, u, v, row4col, col4row):
    active, min_val, sink, shortest, path, seen_r, seen_c = search(
        r, u, v, row4col)
    # Dual update keeps every reduced cost non-negative and tight on the path.
    is_r = tf.equal(row_ids, r)
    safe_cols = tf.maximum(col4row, 0)
    short_of_row = tf.gather(shortest, safe_cols, batch_dims=1)       # [B, R]
    du = tf.where(seen_r & ~is_r, min_val[:, None] - short_of_row,
                  tf.zeros_like(u))
    du = tf.where(is_r, min_val[:, None] * tf.ones_like(u), du)
    u = u + tf.where(active[:, None], du, tf.zeros_like(u))
    dv = tf.where(seen_c & active[:, None], min_val[:, None] - shortest,
                  tf.zeros_like(v))
    v = v - dv

    # Flip the augmenting path from the sink back to row r.
    def aug_cond(j, flipping, row4col, col4row):
      return tf.reduce_any(flipping)

    def aug_body(j, flipping, row4col, col4row):
      i = tf.gather(path, tf.maximum(j, 0), batch_dims=1)
      row4col = _set_at(row4col, j, i, flipping)
      previous = tf.gather(col4row, tf.maximum(i, 0), batch_dims=1)
      col4row = _set_at(col4row, i, j, flipping)
      j = tf.where(flipping, previous, j)
      flipping = flipping & tf.not_equal(i, r)
      return j, flipping, row4col, col4row

    _, _, row4col, col4row = tf.while_loop(
        aug_cond, aug_body, (sink, active, row4col, col4row),
        maximum_iterations=num_r + 1)
    return r + 1, u, v, row4col, col4row

  init = (tf.constant(0, tf.int32), tf.zeros([batch, num_r], dtype),
          tf.zeros([batch, num_c], dtype), tf.fill([batch, num_c], -1),
          tf.fill([batch, num_r], -1))
  max_rows = tf.reduce_max(tf.concat([num_rows, [0]], axis=0))
  _, _, _, _, col4row = tf.while_loop(
      lambda r, *_: r < max_rows, outer_body, init, maximum_iterations=num_r)
  return col4row


def hungarian_matching(cost: tf.Tensor,
                       valid: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Minimum-total-cost matching of ground-truth slots to predictions.

  Args:
    cost: [B, N, M] float tensor, cost[b, n, m] of giving prediction n to ground-truth
      slot m. Non-finite entries are replaced by a cost larger than every finite one.
    valid: optional [B, M] tensor (bool or 0/1 float); slots with 0 are padding and
      are not matched. Default: every slot is valid. The number of valid slots per
      example must not exceed N (true whenever M <= N, which is checked statically).

  Returns:
    [B, M] int32: for each ground-truth slot the index in [0, N) of its matched
    prediction (all distinct within an example), -1 for padding slots. The sum of the
    matched costs is the minimum over all such injective matchings.
  """
  cost = tf.convert_to_tensor(cost)
  if not cost.dtype.is_floating:
    cost = tf.cast(cost, tf.float32)
  if cost.shape.rank != 3:
    raise ValueError(f"cost must be [B, N, M], got shape {cost.shape}")
  num_pred, num_gt = cost.shape[1], cost.shape[2]
  if num_pred is None or num_gt is None:
    raise ValueError("cost needs static N and M dimensions, got "
                     f"{cost.shape}")
  if num_gt > num_pred:
    raise ValueError(f"more ground-truth slots (M={num_gt}) than predictions "
                     f"(N={num_pred}); the input pipeline's max_segments must be <= N")
  batch = cost.shape[0] if cost.shape[0] is not None else tf.shape(cost)[0]
  if valid is None:
    valid = tf.ones([batch, num_gt], tf.bool)
  else:
    valid = tf.cast(valid, tf.bool)
  if num_gt == 0:
    return tf.zeros([batch, 0], tf.int32)

  finite = tf.math.is_finite(cost)
  finite_cost = tf.where(finite, cost, tf.zeros_like(cost))
  big = 2.0 * tf.reduce_max(tf.abs(finite_cost)) + 1.0
  cost = tf.where(finite, cost, big)

  # Rows = ground-truth slots, valid ones first (stable order), padding behind.
  order = tf.argsort(tf.cast(~valid, tf.int32), axis=-1, stable=True)
  rows = tf.gather(tf.transpose(cost, [0, 2, 1]), order, batch_dims=1)
  num_rows = tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1)
  col4row_sorted = _solve_rows(rows, num_rows)
  # Undo the reordering: slot order[k] received col4row_sorted[k].
  inverse = tf.argsort(order, axis=-1, stable=True)
  return tf.gather(col4row_sorted, inverse, batch_dims=1)


def assignment_matrix(indices: tf.Tensor, num_predictions: int,
                      dtype=tf.float32) -> tf.Tensor:
  """One-hot [B, M, N] matrix of a matching; all-zero rows for index -1."""
  return tf.one_hot(indices, num_predictions, dtype=dtype)
