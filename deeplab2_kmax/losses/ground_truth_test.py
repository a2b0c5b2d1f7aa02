"""prepare_ground_truth: flattening, vanished slots, void region, inverse area."""
import numpy as np
import pytest

from deeplab2_kmax.losses.ground_truth import prepare_ground_truth


def _labels():
  # 2x2 image, 3 slots: slot 0 = 3 pixels, slot 1 claims to be valid but has no
  # pixel at stride 4 (vanished), slot 2 padding. Pixel (1, 1) is void.
  masks = np.zeros((1, 2, 2, 3), np.float32)
  masks[0, 0, 0, 0] = masks[0, 0, 1, 0] = masks[0, 1, 0, 0] = 1.0
  return {"masks": masks,
          "mask_classes": np.array([[2, 1, 4]], np.int32),
          "mask_valid": np.array([[1.0, 1.0, 0.0]], np.float32),
          "mask_is_thing": np.array([[1.0, 1.0, 0.0]], np.float32),
          "semantic_strided": np.array([[[2, 2], [2, 255]]], np.int32),
          "ignore_strided": np.array([[[0.0, 0.0], [0.0, 1.0]]], np.float32),
          "pixel_weights": np.array([[[1.0, 2.0], [1.0, 0.0]]], np.float32)}


def test_prepare_ground_truth_values():
  gt = prepare_ground_truth(_labels(), num_classes=4)
  np.testing.assert_array_equal(gt.valid.numpy(), [[1, 0, 0]])
  np.testing.assert_array_equal(gt.classes.numpy(), [[2, 4, 4]])
  np.testing.assert_array_equal(gt.is_thing.numpy(), [[1, 0, 0]])
  np.testing.assert_array_equal(gt.area.numpy(), [[3, 0, 0]])
  np.testing.assert_array_equal(gt.masks.numpy()[0, :, 0], [1, 1, 1, 0])
  np.testing.assert_array_equal(gt.in_segment.numpy(), [[1, 1, 1, 0]])
  np.testing.assert_array_equal(gt.semantic.numpy(), [[2, 2, 2, 3]])
  np.testing.assert_array_equal(gt.semantic_weights.numpy(), [[1, 2, 1, 0]])
  np.testing.assert_allclose(gt.inverse_area.numpy(), [[4 / 3, 4 / 3, 4 / 3, 4]])


def test_missing_label_key_is_named():
  labels = _labels()
  del labels["pixel_weights"]
  with pytest.raises(KeyError, match="pixel_weights"):
    prepare_ground_truth(labels, num_classes=4)


def test_subsampling_ratio_and_subsample_to():
  from deeplab2_kmax.losses.ground_truth import subsample_to
  from deeplab2_kmax.losses.ground_truth import subsampling_ratio
  assert subsampling_ratio((17, 33), (9, 17), "x") == 2      # stride 2 -> 4
  assert subsampling_ratio((257, 513), (257, 513), "x") == 1
  assert subsampling_ratio((1, 9), (1, 5), "x") == 2
  for target in ((9, 9), (9, 16), (33, 65), (5, 17)):
    with pytest.raises(ValueError, match="label_stride"):
      subsampling_ratio((17, 33), target, "x")
  labels = _labels()
  labels = {k: np.repeat(np.repeat(v, 4, 1), 4, 2)[:, :7, :7]
            if k in ("masks", "semantic_strided", "ignore_strided", "pixel_weights")
            else v for k, v in labels.items()}
  gt = prepare_ground_truth(labels, num_classes=4)
  assert gt.grid == (7, 7)
  picked = subsample_to(gt, (3, 3), "x")
  np.testing.assert_array_equal(
      picked.semantic.numpy(),
      np.clip(labels["semantic_strided"][:, ::3, ::3], 0, 3).reshape(1, 9))
  np.testing.assert_array_equal(picked.in_segment.numpy(),
                                gt.in_segment.numpy().reshape(1, 7, 7)[:, ::3, ::3]
                                .reshape(1, 9))
