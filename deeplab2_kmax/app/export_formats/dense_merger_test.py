"""DenseMaskWiseMerger (static shapes, dense ops) against MaskWiseMerger (the plain,
sparse form): every output equal, on random and structured logits, strides 2/4/8,
batched, cropped through image_size, both semantic modes."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.app.export_formats.dense_merger import DenseMaskWiseMerger
from deeplab2_kmax.post_processing import MaskWiseMerger
from deeplab2_kmax.post_processing_test import _random_case, _structured_case

KEYS = ("panoptic", "semantic", "instance", "segment_ids", "segment_classes",
        "segment_areas", "segment_is_thing", "num_segments")


def _merger(stride=4, **kwargs):
  return MaskWiseMerger(**{**dict(
      thing_train_ids=[0, 2], label_divisor=256, ignore_label=255, thing_threshold=0.5,
      stuff_threshold=0.4, overlap_threshold=0.8, thing_area_limit=10,
      stuff_area_limit=40, mask_stride=stride), **kwargs})


def _compare(merger, class_logits, mask_logits, sizes=None):
  """Both mergers on a batch; sizes: per-image (h, w) or None (full size). Returns
  the number of segments compared."""
  s = merger.mask_stride
  full = (s * (mask_logits.shape[1] - 1) + 1, s * (mask_logits.shape[2] - 1) + 1)
  dense = DenseMaskWiseMerger(merger)
  outputs = {"class_logits": tf.constant(class_logits), "mask_logits": tf.constant(mask_logits)}
  got = dense(outputs, None if sizes is None else tf.constant(sizes, tf.int32))
  segments = 0
  for b in range(class_logits.shape[0]):
    h, w = full if sizes is None else sizes[b]
    one = {k: v[b:b + 1] for k, v in outputs.items()}
    want = merger(one, full, original_size=(h, w))
    for key in KEYS:
      g = got[key][b].numpy()
      if g.ndim == 2:  # outside the image: void / ignore / 0
        fill = {"panoptic": 255 * 256, "semantic": 255, "instance": 0}[key]
        assert np.all(g[h:] == fill) and np.all(g[:, w:] == fill), key
        g = g[:h, :w]
      np.testing.assert_array_equal(g, want[key][0].numpy(), err_msg=f"{key} image {b}")
    np.testing.assert_allclose(got["segment_scores"][b].numpy(),
                               want["segment_scores"][0].numpy(), rtol=1e-6, atol=1e-7)
    segments += int(want["num_segments"][0])
  return segments


def test_random_logits_equal_the_plain_merger():
  rng = np.random.default_rng(0)
  merger = _merger()
  segments = 0
  for _ in range(8):
    class_logits, mask_logits = _random_case(rng, n=12, hs=17, ws=13)
    segments += _compare(merger, class_logits, mask_logits)
  assert segments > 20


@pytest.mark.parametrize("stride,pixelwise", [(2, True), (4, False), (8, True)])
def test_structured_logits_batched_and_cropped(stride, pixelwise):
  rng = np.random.default_rng(stride)
  merger = _merger(stride, pixelwise_semantic=pixelwise, thing_area_limit=4,
                   stuff_area_limit=12)
  cases = [_structured_case(rng, n=12, hs=9, ws=11) for _ in range(3)]
  class_logits = np.concatenate([c[0] for c in cases])
  mask_logits = np.concatenate([c[1] for c in cases])
  full = (stride * 8 + 1, stride * 10 + 1)
  sizes = [full, (full[0] - stride - 1, full[1] - 2), (stride * 3, full[1] // 2)]
  assert _compare(merger, class_logits, mask_logits, sizes) > 5


def test_overlap_rejections_and_stuff_merging_are_exercised():
  """Near-duplicate masks (rejected by the overlap rule) and several stuff masks of one
  class (one segment, summed area)."""
  rng = np.random.default_rng(7)
  merger = _merger(thing_train_ids=[0], thing_threshold=0.0, stuff_threshold=0.0,
                   thing_area_limit=1, stuff_area_limit=1)
  for _ in range(4):
    class_logits, mask_logits = _structured_case(rng, n=10, num_classes=2, hs=9, ws=9)
    _compare(merger, class_logits, mask_logits)


def test_runs_under_a_static_tf_function_with_dynamic_batch():
  rng = np.random.default_rng(3)
  merger = _merger()
  class_logits, mask_logits = _random_case(rng, n=8, hs=9, ws=9)
  dense = DenseMaskWiseMerger(merger)
  fn = tf.function(lambda c, m: dense({"class_logits": c, "mask_logits": m}),
                   input_signature=[tf.TensorSpec([None, 8, 6], tf.float32),
                                    tf.TensorSpec([None, 9, 9, 8], tf.float32)])
  out = fn(tf.constant(np.repeat(class_logits, 2, 0)), tf.constant(np.repeat(mask_logits, 2, 0)))
  assert out["panoptic"].shape == (2, 33, 33)
  np.testing.assert_array_equal(out["panoptic"][0], out["panoptic"][1])
  ops = {op.type for op in fn.get_concrete_function().graph.get_operations()}
  # No dynamic-shape or sparse op is left for a converter to reject.
  assert not ops & {"Where", "While", "StatelessWhile", "Bincount", "DenseBincount",
                    "UnsortedSegmentSum", "UnsortedSegmentMin", "TensorScatterUpdate",
                    "TensorScatterMin", "ScatterNd", "GatherNd", "DivNoNan"}, ops


def test_rejects_dynamic_shapes():
  merger = DenseMaskWiseMerger(_merger())
  fn = tf.function(lambda m: merger({"class_logits": tf.zeros([1, 4, 3]), "mask_logits": m}),
                   input_signature=[tf.TensorSpec([1, None, 5, 4], tf.float32)])
  with pytest.raises(ValueError, match="static"):
    fn.get_concrete_function()
