"""MaskWiseMerger against a numpy reference that paints masks one by one (deeplab2)."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab2_kmax.post_processing import MaskWiseMerger, upsample_mask_logits


def _softmax(x, axis=-1):
  x = x - x.max(axis=axis, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=axis, keepdims=True)


def reference_merge(class_logits, grid_logits, logits, thing_ids, divisor, ignore, t_thing,
                    t_stuff, pixel_conf, overlap, thing_area, stuff_area):
  """deeplab2's sequential mask-wise merging for one image.

  grid_logits: [Hs, Ws, N] stride-4 logits (mask scores for the order, as deeplab2);
  logits: [H, W, N] upsampled (painting and areas).
  """
  num_classes = class_logits.shape[-1] - 1
  probs = _softmax(class_logits.astype(np.float64))[:, :-1]
  cls = probs.argmax(-1)
  conf = probs.max(-1)
  is_thing = np.isin(cls, thing_ids)
  confident = np.where(is_thing, conf >= t_thing, conf >= t_stuff)
  p = _softmax(logits.astype(np.float32))
  binary = p > pixel_conf
  pg = _softmax(grid_logits.astype(np.float32))
  bg = pg > pixel_conf
  count = bg.sum((0, 1))
  score = np.where(count > 0, (pg * bg).sum((0, 1)) / np.maximum(count, 1), 0.0)
  order = np.argsort(-(conf * score), kind="stable")
  canvas = np.zeros(logits.shape[:2], np.int64)  # position + 1 of the painting mask
  stats = {"kept": 0, "rejected_overlap": 0}
  for pos, m in enumerate(order):
    mask = binary[..., m]
    new = mask & (canvas == 0)
    if not confident[m]:
      continue
    if np.float32(new.sum()) > np.float32(mask.sum()) * np.float32(overlap):
      canvas[new] = pos + 1
      stats["kept"] += 1
    elif mask.sum() > 0:
      stats["rejected_overlap"] += 1
  sem = np.full(canvas.shape, -1)
  painted = canvas > 0
  sem[painted] = cls[order[canvas[painted] - 1]]
  thing_px = painted & np.isin(sem, thing_ids)
  stuff_px = painted & ~thing_px
  out = np.full(canvas.shape, ignore * divisor, np.int64)
  for pos in np.unique(canvas[thing_px]):
    region = thing_px & (canvas == pos)
    if region.sum() >= thing_area:
      out[region] = sem[region][0] * divisor + pos
  for c in range(num_classes):
    region = stuff_px & (sem == c)
    if region.any() and region.sum() >= stuff_area:
      out[region] = c * divisor
  return out, stats


def _random_case(rng, n=12, num_classes=5, hs=17, ws=13, dup=3):
  """Smooth random mask logits with some near-duplicate masks (forces overlaps)."""
  coarse = rng.normal(size=(1, hs // 4 + 2, ws // 4 + 2, n)).astype(np.float32) * 4.0
  mask_logits = tf.image.resize(coarse, (hs, ws), method="bicubic").numpy()
  for k in range(dup):  # mask n-1-k nearly copies mask k
    mask_logits[..., n - 1 - k] = mask_logits[..., k] + rng.normal(
        scale=0.3, size=(1, hs, ws)).astype(np.float32)
  mask_logits += rng.normal(scale=0.5, size=mask_logits.shape).astype(np.float32)
  class_logits = (rng.normal(size=(1, n, num_classes + 1)) * 3.0).astype(np.float32)
  return class_logits, mask_logits


def _compare(merger, class_logits, mask_logits, original_size=None, tf_resize=False):
  """Merger vs `reference_merge` on every image. The reference paints the logits
  upsampled by `upsample_mask_logits` (bit-exact claim) or, with tf_resize, by
  tf.compat.v1.image.resize_bilinear(align_corners=True) as deeplab2 does."""
  s = merger.mask_stride
  out_size = (s * (mask_logits.shape[1] - 1) + 1, s * (mask_logits.shape[2] - 1) + 1)
  got = merger({"class_logits": tf.constant(class_logits),
                "mask_logits": tf.constant(mask_logits)}, out_size, original_size)
  if tf_resize:
    up = tf.compat.v1.image.resize_bilinear(tf.constant(mask_logits), out_size,
                                            align_corners=True).numpy()
  else:
    up = upsample_mask_logits(tf.constant(mask_logits), s).numpy()
  stats_all = []
  for b in range(class_logits.shape[0]):
    logits = up[b]
    grid = mask_logits[b]
    if original_size is not None:
      logits = logits[:original_size[0], :original_size[1]]
      grid = grid[:(original_size[0] + s - 2) // s + 1, :(original_size[1] + s - 2) // s + 1]
    want, stats = reference_merge(
        class_logits[b], grid, logits, merger.thing_train_ids, merger.label_divisor,
        merger.ignore_label, merger.thing_threshold, merger.stuff_threshold,
        merger.pixel_confidence, merger.overlap_threshold, merger.thing_area_limit,
        merger.stuff_area_limit)
    np.testing.assert_array_equal(got["panoptic"][b].numpy(), want)
    # deeplab2's threshold-free semantic map: class of the per-pixel argmax mask.
    cls = _softmax(class_logits[b].astype(np.float64))[:, :-1].argmax(-1)
    want_sem = (cls[logits.argmax(-1)] if merger.pixelwise_semantic
                else want // merger.label_divisor)
    np.testing.assert_array_equal(got["semantic"][b].numpy(), want_sem)
    stats_all.append(stats)
  return got, stats_all


def test_matches_sequential_reference_on_random_logits():
  rng = np.random.default_rng(1)
  merger = MaskWiseMerger(thing_train_ids=[0, 1, 2], label_divisor=256, ignore_label=255,
                          thing_threshold=0.5, stuff_threshold=0.4, thing_area_limit=20,
                          stuff_area_limit=60)
  kept = rejected = 0
  for _ in range(25):
    class_logits, mask_logits = _random_case(rng)
    _, stats = _compare(merger, class_logits, mask_logits)
    kept += stats[0]["kept"]
    rejected += stats[0]["rejected_overlap"]
  # The cases must exercise both painting and overlap rejections.
  assert kept > 50 and rejected > 5, (kept, rejected)


def test_matches_reference_batched_cropped_and_cityscapes_thresholds():
  rng = np.random.default_rng(2)
  merger = MaskWiseMerger(thing_train_ids=[1, 3], label_divisor=1000, ignore_label=255,
                          thing_threshold=0.5, stuff_threshold=0.3, overlap_threshold=0.9,
                          thing_area_limit=16, stuff_area_limit=64)
  cases = [_random_case(rng, n=16, hs=21, ws=17) for _ in range(3)]
  class_logits = np.concatenate([c[0] for c in cases])
  mask_logits = np.concatenate([c[1] for c in cases])
  got, _ = _compare(merger, class_logits, mask_logits, original_size=(70, 61))
  assert got["panoptic"].shape == (3, 70, 61)


def test_default_coco_thresholds_and_segment_info():
  rng = np.random.default_rng(3)
  merger = MaskWiseMerger(thing_train_ids=[0, 1], label_divisor=256, ignore_label=255)
  class_logits, mask_logits = _random_case(rng, n=10, num_classes=4, hs=41, ws=45, dup=2)
  class_logits[0, :, :-1] *= 3.0  # make most masks confident
  got, _ = _compare(merger, class_logits, mask_logits)
  pan = got["panoptic"][0].numpy()
  num = int(got["num_segments"][0])
  ids = got["segment_ids"][0].numpy()
  values, counts = np.unique(pan[pan != 255 * 256], return_counts=True)
  assert num == len(values) > 0
  np.testing.assert_array_equal(np.sort(ids[:num]), values)
  assert (ids[num:] == -1).all()
  areas = dict(zip(values.tolist(), counts.tolist()))
  for k in range(num):
    sid = int(ids[k])
    assert int(got["segment_areas"][0, k]) == areas[sid]
    assert int(got["segment_classes"][0, k]) == sid // 256
    assert bool(got["segment_is_thing"][0, k]) == (sid // 256 in (0, 1))
    assert 0.0 < float(got["segment_scores"][0, k]) <= 1.0
  scores = got["segment_scores"][0, :num].numpy()
  assert (np.diff(scores) <= 0).all()  # score order
  np.testing.assert_array_equal(got["instance"][0].numpy(), pan % 256)
  no_pixelwise = MaskWiseMerger(thing_train_ids=[0, 1], label_divisor=256, ignore_label=255,
                                pixelwise_semantic=False)
  _compare(no_pixelwise, class_logits, mask_logits)


def test_nothing_confident_gives_all_void():
  merger = MaskWiseMerger(thing_train_ids=[0], label_divisor=256, ignore_label=255)
  class_logits = np.zeros((1, 4, 3), np.float32)
  class_logits[..., -1] = 10.0  # everything void
  mask_logits = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype(np.float32)
  got = merger({"class_logits": class_logits, "mask_logits": mask_logits}, (17, 17))
  assert (got["panoptic"].numpy() == 255 * 256).all()
  assert int(got["num_segments"][0]) == 0
  assert (got["segment_ids"].numpy() == -1).all()


def test_runs_in_tf_function_and_saved_model(tmp_path):
  merger = MaskWiseMerger(thing_train_ids=[0, 1], label_divisor=256, ignore_label=255,
                          thing_area_limit=4, stuff_area_limit=16)
  rng = np.random.default_rng(4)
  class_logits, mask_logits = _random_case(rng, n=8, num_classes=3, hs=9, ws=9, dup=1)

  class Exported(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 4], tf.float32),
                                  tf.TensorSpec([None, None, None, 8], tf.float32),
                                  tf.TensorSpec([2], tf.int32)])
    def merge(self, c, m, size):
      out = merger({"class_logits": c, "mask_logits": m}, (size[0], size[1]))
      return {"panoptic": out["panoptic"], "num_segments": out["num_segments"]}

  module = Exported()
  eager = merger({"class_logits": class_logits, "mask_logits": mask_logits}, (33, 33))
  tf.saved_model.save(module, str(tmp_path / "sm"))
  loaded = tf.saved_model.load(str(tmp_path / "sm"))
  got = loaded.merge(class_logits, mask_logits, tf.constant([33, 33]))
  np.testing.assert_array_equal(got["panoptic"].numpy(), eager["panoptic"].numpy())
  np.testing.assert_array_equal(got["num_segments"].numpy(), eager["num_segments"].numpy())


def test_rejects_too_low_pixel_confidence_and_too_many_masks():
  with pytest.raises(ValueError, match="pixel_confidence"):
    MaskWiseMerger([0], 256, 255, pixel_confidence=0.2)
  merger = MaskWiseMerger([0], 8, 255)
  with pytest.raises(ValueError, match="label_divisor"):
    merger({"class_logits": np.zeros((1, 8, 3), np.float32),
            "mask_logits": np.zeros((1, 3, 3, 8), np.float32)}, (9, 9))


def test_xla_compatible_variant_matches_and_compiles_with_xla():
  rng = np.random.default_rng(5)
  class_logits, mask_logits = _random_case(rng, n=12, hs=37, ws=29)
  kwargs = dict(thing_train_ids=[0, 1, 2], label_divisor=256, ignore_label=255,
                thing_threshold=0.5, stuff_threshold=0.4, thing_area_limit=20,
                stuff_area_limit=60)
  cells = MaskWiseMerger(**kwargs)
  dense = MaskWiseMerger(xla_compatible=True, **kwargs)
  _compare(dense, class_logits, mask_logits)  # exact vs the sequential reference
  inputs = {"class_logits": tf.constant(class_logits), "mask_logits": tf.constant(mask_logits)}
  want = cells(inputs, (145, 113))
  got = tf.function(lambda x: dense(x, (145, 113)), jit_compile=True)(inputs)
  for key in ("panoptic", "semantic", "segment_ids", "segment_classes", "segment_areas",
              "num_segments"):
    np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
  np.testing.assert_allclose(got["segment_scores"].numpy(), want["segment_scores"].numpy(),
                             rtol=1e-5)


def test_sharp_and_flat_logits_use_the_cell_shortcuts_exactly():
  rng = np.random.default_rng(7)
  merger = MaskWiseMerger(thing_train_ids=[0, 1], label_divisor=256, ignore_label=255,
                          thing_threshold=0.3, stuff_threshold=0.3, thing_area_limit=8,
                          stuff_area_limit=32)
  for scale in (6.0, 0.05):  # sharp masks: mostly clean cells; flat: mostly empty cells
    class_logits, mask_logits = _random_case(rng, n=10, num_classes=3, hs=29, ws=33, dup=2)
    mask_logits = mask_logits * scale
    got, _ = _compare(merger, class_logits, mask_logits)
    painted = (got["panoptic"].numpy() != 255 * 256).mean()
    assert (painted > 0.5) if scale > 1 else (painted == 0.0)


def test_cells_only_the_exact_bound_proves_empty_match_the_reference():
  """Left half: 5 masks share the top logit (+ noise) and the rest are far below, so no
  probability reaches 0.4 but the cheap Jensen bound (mean over masks) cannot prove it;
  the exact corner bound must. The right half is ordinary (clean and boundary cells)."""
  rng = np.random.default_rng(8)
  merger = MaskWiseMerger(thing_train_ids=[0, 1], label_divisor=256, ignore_label=255,
                          thing_threshold=0.3, stuff_threshold=0.3, thing_area_limit=8,
                          stuff_area_limit=32)
  class_logits, mask_logits = _random_case(rng, n=12, num_classes=3, hs=17, ws=21, dup=2)
  mask_logits = mask_logits * 4.0
  left = mask_logits[:, :, :10]
  left[...] = -30.0
  left[..., 2:7] = 5.0 + rng.normal(scale=0.05, size=left[..., 2:7].shape)
  got, _ = _compare(merger, class_logits, mask_logits)
  pan = got["panoptic"][0].numpy()
  assert (pan[:, :37] == 255 * 256).all() and (pan[:, 41:] != 255 * 256).mean() > 0.5
  # The left cells are beyond the Jensen bound but within the exact one.
  g = mask_logits[0, :, :10]
  corners = np.stack([g[:-1, :-1], g[:-1, 1:], g[1:, :-1], g[1:, 1:]], 2)
  jensen = corners.max((2, 3)) - np.log(12) - corners.mean(3).min(2)
  lo = corners.min(2)
  exact = corners.max((2, 3)) - (lo.max(-1) + np.log(np.exp(lo - lo.max(-1, keepdims=True))
                                                    .sum(-1)))
  assert (jensen > np.log(0.4)).all() and (exact < np.log(0.4) - 1e-3).all()


# ----------------------------------------------------------------- other mask strides
def _structured_case(rng, n=12, num_classes=4, hs=17, ws=21, scale=8.0, dup=3):
  """Piecewise-constant masks (rectangles and disks on the grid; sharp edges, so clean,
  boundary and empty cells all occur), near-duplicate masks (overlaps) and masks that
  never win."""
  label = np.zeros((hs, ws), np.int64)
  yy, xx = np.mgrid[:hs, :ws]
  for m in range(1, n - dup - 2):
    if rng.random() < 0.5:
      y0, x0 = rng.integers(0, hs), rng.integers(0, ws)
      label[y0:y0 + rng.integers(2, hs // 2 + 2), x0:x0 + rng.integers(2, ws // 2 + 2)] = m
    else:
      cy, cx, r = rng.uniform(0, hs), rng.uniform(0, ws), rng.uniform(1.5, hs / 3)
      label[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = m
  logits = scale * np.eye(n, dtype=np.float32)[label]
  for k in range(dup):  # mask n-1-k shares mask k's region, slightly weaker
    logits[..., n - 1 - k] = logits[..., k] - 0.2
  logits += rng.normal(scale=0.3, size=logits.shape).astype(np.float32)
  class_logits = (rng.normal(size=(1, n, num_classes + 1)) * 3.0).astype(np.float32)
  return class_logits, logits[None]


def _stride_merger(stride, **kwargs):
  return MaskWiseMerger(**{**dict(
      thing_train_ids=[0, 1], label_divisor=1000, ignore_label=255, thing_threshold=0.5,
      stuff_threshold=0.3, overlap_threshold=0.8, thing_area_limit=6, stuff_area_limit=24,
      mask_stride=stride), **kwargs})


def test_stride2_matches_dense_references_on_random_logits():
  """Stride-2 logits (Cityscapes R50 / MaX-S): equal to deeplab2's sequential paint on
  our upsampling (bit-exact) and on tf's align-corners resize, several grid sizes."""
  rng = np.random.default_rng(11)
  merger = _stride_merger(2)
  kept = rejected = 0
  for hs, ws in [(17, 13), (33, 33), (9, 31), (26, 19), (2, 2)]:
    for _ in range(3):
      class_logits, mask_logits = _random_case(rng, hs=hs, ws=ws)
      got, stats = _compare(merger, class_logits, mask_logits)
      _compare(merger, class_logits, mask_logits, tf_resize=True)
      assert got["panoptic"].shape == (1, 2 * hs - 1, 2 * ws - 1)
      kept += stats[0]["kept"]
      rejected += stats[0]["rejected_overlap"]
  assert kept > 30 and rejected > 3, (kept, rejected)


def test_stride2_batched_and_cropped():
  rng = np.random.default_rng(12)
  merger = _stride_merger(2, overlap_threshold=0.9)
  cases = [_random_case(rng, n=16, hs=21, ws=17) for _ in range(3)]
  class_logits = np.concatenate([c[0] for c in cases])
  mask_logits = np.concatenate([c[1] for c in cases])
  for size in [(36, 30), (41, 33), (1, 1)]:
    got, _ = _compare(merger, class_logits, mask_logits, original_size=size)
    assert got["panoptic"].shape == (3,) + size


@pytest.mark.parametrize("scale", [8.0, 2.0, 0.05])
def test_stride2_structured_logits(scale):
  rng = np.random.default_rng(13)
  merger = _stride_merger(2)
  painted = []
  for hs, ws in [(17, 21), (30, 23)]:
    class_logits, mask_logits = _structured_case(rng, hs=hs, ws=ws, scale=scale)
    class_logits[0, :, :-1] *= 2.0
    got, _ = _compare(merger, class_logits, mask_logits)
    _compare(merger, class_logits, mask_logits, tf_resize=True)
    painted.append((got["panoptic"].numpy() != 255 * 1000).mean())
  if scale == 0.05:
    assert max(painted) == 0.0  # flat logits: every cell proven empty
  else:
    assert min(painted) > 0.1, painted


def test_stride2_xla_compatible_variant_matches_the_cell_path_and_compiles():
  rng = np.random.default_rng(14)
  inputs = []
  for case in (_random_case(rng, n=12, hs=37, ws=29),
               _structured_case(rng, n=12, hs=37, ws=29)):
    inputs.append(case)
  cells = _stride_merger(2)
  dense = _stride_merger(2, xla_compatible=True)
  assert dense.get_config()["mask_stride"] == 2
  for class_logits, mask_logits in inputs:
    _compare(dense, class_logits, mask_logits)  # exact vs the sequential reference
    x = {"class_logits": tf.constant(class_logits), "mask_logits": tf.constant(mask_logits)}
    want = cells(x, (73, 57))
    for got in (dense(x, (73, 57)),
                tf.function(lambda x: dense(x, (73, 57)), jit_compile=True)(x)):
      for key in ("panoptic", "semantic", "segment_ids", "segment_classes",
                  "segment_areas", "num_segments"):
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)
      np.testing.assert_allclose(got["segment_scores"].numpy(),
                                 want["segment_scores"].numpy(), rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 8])
def test_other_power_of_two_strides(stride):
  rng = np.random.default_rng(15)
  merger = _stride_merger(stride, thing_area_limit=2 * stride, stuff_area_limit=4 * stride)
  for case in (_random_case(rng, n=10, hs=13, ws=11),
               _structured_case(rng, n=10, hs=13, ws=11)):
    _compare(merger, *case)
    _compare(merger, *case, original_size=(stride * 9 + 1, stride * 7))


def test_mask_stride_is_checked_configurable_and_round_trips():
  with pytest.raises(ValueError, match="power of two"):
    MaskWiseMerger([0], 256, 255, mask_stride=3)
  merger = _stride_merger(2)
  assert MaskWiseMerger(**merger.get_config()).mask_stride == 2
  assert MaskWiseMerger([0], 256, 255).mask_stride == 4
  x = {"class_logits": np.zeros((1, 4, 3), np.float32),
       "mask_logits": np.zeros((1, 5, 5, 4), np.float32)}
  merger(x, (9, 9))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"mask_stride=2.*output_stride"):
    merger(x, (17, 17))  # stride-4 geometry given to a stride-2 merger
  import gin
  try:
    gin.parse_config("MaskWiseMerger.mask_stride = 2")
    assert MaskWiseMerger([0], 256, 255).mask_stride == 2
  finally:
    gin.clear_config()
