"""Pair counting of evaluation/pq_files.py: the compiled kernel against numpy."""

import numpy as np
import pytest

from evaluation import png_decode
from evaluation import pq_files


@pytest.mark.skipif(not png_decode.AVAILABLE, reason="numba not installed")
def test_pair_counts_compiled_kernel_equals_numpy():
  rng = np.random.default_rng(7)
  ws = pq_files.Workspace()
  for _ in range(5):
    gt = rng.choice([0, 4, 9, (1 << 24) - 1, 77], size=(13, 17)).astype(np.uint32)
    pred = rng.choice([0, 4, 5, 123456], size=(13, 17)).astype(np.uint32)
    gt[:, :6] = 9  # long runs of one pair
    for gt_keys, pred_keys in (([9, 4, (1 << 24) - 1], [5, 4, 123456]), ([], [4])):
      compiled = ws.pair_counts(gt, pred, gt_keys, pred_keys, compiled=True)
      plain = ws.pair_counts(gt, pred, gt_keys, pred_keys, compiled=False)
      np.testing.assert_array_equal(compiled, plain)
      assert compiled.sum() == gt.size
      # Not 8-byte aligned (one-pixel offset): the kernel's pixel-at-a-time path.
      flat_gt, flat_pred = gt.reshape(-1)[1:], pred.reshape(-1)[1:]
      np.testing.assert_array_equal(
          ws.pair_counts(flat_gt, flat_pred, gt_keys, pred_keys, compiled=True),
          ws.pair_counts(flat_gt, flat_pred, gt_keys, pred_keys, compiled=False))
  assert not ws.rows.any() and not ws.cols.any()  # tables reset after each image
