"""Input pipeline + loss targets against a numpy reference on hand-built examples."""
import numpy as np
import pytest
import tensorflow as tf

from data import input_pipeline
from data import panoptic_io
from data.panoptic_targets import panoptic_targets
from data import preprocessing
from data import tfrecord_format
from deeplab2_kmax.core.dataset_info import Category, DatasetInfo

D, IGNORE, C = 256, 255, 5
VOID = IGNORE * D
THINGS = [0, 1, 2]
INFO = DatasetInfo("hand", D, IGNORE, [
    Category(10 + t, t, f"c{t}", int(t in THINGS), (t, t, t)) for t in range(C)])


def reference_targets(pan, max_segments, stride=4):
  """Straightforward numpy version of docs/DESIGN.md's label dict."""
  sem, inst = pan // D, pan % D
  ignore = (sem >= C) | (np.isin(sem, THINGS) & (inst == 0))
  semantic = np.where(ignore, IGNORE, sem)
  ps, igs = pan[::stride, ::stride], ignore[::stride, ::stride]
  values = sorted(set(ps[~igs].tolist()))[:max_segments]
  masks = np.zeros(ps.shape + (max_segments,), np.float32)
  classes = np.full(max_segments, C)
  valid = np.zeros(max_segments, np.float32)
  for k, v in enumerate(values):
    masks[..., k] = ps == v
    classes[k], valid[k] = v // D, 1
  igs = igs | (masks.sum(-1) == 0)
  return {"semantic": semantic, "masks": masks, "mask_classes": classes, "mask_valid": valid,
          "mask_is_thing": np.isin(classes, THINGS) * valid,
          "semantic_strided": semantic[::stride, ::stride], "ignore_strided": igs * 1.0,
          "pixel_weights": 1.0 - igs}


def hand_label(h=13, w=13):
  """Stuff 3 (top) / 4 (bottom), instances of things 0 and 1, a crowd of 2, void."""
  pan = np.full((h, w), 3 * D, np.int64)
  pan[h // 2:] = 4 * D
  pan[1:6, 1:6] = 0 * D + 1          # thing 0, instance 1
  pan[6:10, 2:7] = 0 * D + 2         # thing 0, instance 2
  pan[3:9, 8:12] = 1 * D + 1         # thing 1, instance 1
  pan[10:, 8:] = 2 * D               # crowd of thing 2
  pan[0, :3] = VOID                  # void
  pan[h - 2, 1] = 1 * D + 7          # an instance between stride-4 grid points
  return pan.astype(np.int32)


def _check(got, want):
  for key, value in want.items():
    np.testing.assert_allclose(np.asarray(got[key]), value, err_msg=key)


def test_targets_of_hand_built_example():
  pan = hand_label()
  got = {k: v.numpy() for k, v in panoptic_targets(pan, C, THINGS, D, IGNORE, 8).items()}
  _check(got, reference_targets(pan, 8))
  # Hand-checked values: the grid is rows/cols 0,4,8,12.
  np.testing.assert_array_equal(got["mask_classes"], [0, 0, 1, 3, 4, 5, 5, 5])
  assert got["masks"].shape == (4, 4, 8)
  assert got["masks"][1, 1, 0] == 1 and got["masks"][0, 0, 3] == 0  # (0,0) is void
  assert got["ignore_strided"][0, 0] == 1 and got["ignore_strided"][3, 3] == 1  # void, crowd
  assert got["semantic"][11, 1] == 1 and got["semantic"][12, 12] == IGNORE
  np.testing.assert_array_equal(got["mask_is_thing"], [1, 1, 1, 0, 0, 0, 0, 0])


def test_targets_truncate_to_max_segments_and_ignore_the_rest():
  pan = hand_label()
  got = panoptic_targets(pan, C, THINGS, D, IGNORE, 3)
  _check(got, reference_targets(pan, 3))
  assert got["mask_valid"].numpy().sum() == 3
  assert got["ignore_strided"].numpy()[0, 1] == 1  # stuff 3 was dropped -> ignored


def test_targets_at_stride_2_match_the_numpy_reference():
  pan = hand_label()
  pan[10, 2] = 1 * D + 9  # an instance on the stride-2 grid only
  got = {k: v.numpy() for k, v in
         panoptic_targets(pan, C, THINGS, D, IGNORE, 8, stride=2).items()}
  want = reference_targets(pan, 8, stride=2)
  _check(got, want)
  assert got["masks"].shape == (7, 7, 8)
  assert got["mask_valid"].sum() == 6 and reference_targets(pan, 8)["mask_valid"].sum() == 5
  np.testing.assert_array_equal(got["mask_classes"], [0, 0, 1, 1, 3, 4, 5, 5])
  assert got["masks"][5, 1, 3] == 1 and got["masks"][:, :, 3].sum() == 1
  # Every stride-4 target is the [::2, ::2] subsample of the stride-2 one.
  four = reference_targets(pan, 8)
  np.testing.assert_array_equal(got["semantic_strided"][::2, ::2], four["semantic_strided"])
  # Truncation at stride 2 ignores the dropped segments' pixels, as at stride 4.
  _check(panoptic_targets(pan, C, THINGS, D, IGNORE, 2, stride=2),
         reference_targets(pan, 2, stride=2))


def test_small_instance_weight():
  pan = hand_label()
  got = panoptic_targets(pan, C, THINGS, D, IGNORE, 8, small_instance_area=21,
                         small_instance_weight=3.0)["pixel_weights"].numpy()
  # instance 2 of thing 0 has 20 pixels (small), instance 1 has 25, thing 1 has 24.
  assert got[2, 1] == 3.0 and got[1, 1] == 1.0 and got[1, 2] == 1.0 and got[0, 0] == 0.0


def _write_record(path, examples, prefix="img"):
  with tf.io.TFRecordWriter(str(path)) as w:
    for i, (image, pan) in enumerate(examples):
      ex = tfrecord_format.make_example(panoptic_io.encode_png(image), "png", pan.shape[0],
                                        pan.shape[1], f"{prefix}{i}", f"{prefix}{i}.png",
                                        panoptic_io.encode_id_png(pan))
      w.write(ex.SerializeToString())


def _code(v):
  return 0 if v == VOID else (v // D) * 40 + (v % D) * 5 + 10


def _code_image(pan):
  """An image whose red channel encodes the label, to check image/label alignment."""
  codes = {v: _code(v) for v in np.unique(pan).tolist()}
  red = np.vectorize(codes.get)(pan).astype(np.uint8)
  return np.stack([red, red // 2, np.zeros_like(red)], -1), codes


def test_eval_pipeline_pads_top_left_and_keeps_original_size(tmp_path):
  pan = hand_label(11, 13)
  image, _ = _code_image(pan)
  _write_record(tmp_path / "val-00000-of-00001.tfrecord", [(image, pan)])
  features, labels = next(iter(input_pipeline.build_dataset(
      str(tmp_path / "val-*.tfrecord"), INFO, False, 1, crop_size=(13, 17), max_segments=8)))
  padded = np.full((13, 17), VOID, np.int32)
  padded[:11, :13] = pan
  np.testing.assert_array_equal(labels["panoptic"][0], padded)
  np.testing.assert_array_equal(features["image"][0, :11, :13], image)
  assert np.all(features["image"][0, 11:] == 127.5)
  np.testing.assert_array_equal(labels["original_size"][0], [11, 13])
  assert labels["image_id"][0].numpy() == b"img0"
  _check({k: v[0] for k, v in labels.items()}, reference_targets(padded, 8))


def _train_ds(pattern, seed, **kw):
  kw = dict(dict(crop_size=(9, 9), min_scale=1.0, max_scale=1.0, max_segments=8, seed=seed,
                 deterministic=True, shuffle_buffer_size=4), **kw)
  return input_pipeline.build_dataset(pattern, INFO, True, 2, **kw)


def test_train_pipeline_crops_flips_and_is_reproducible(tmp_path):
  examples = [(_code_image(p)[0], p) for p in (hand_label(12, 14), hand_label(7, 13))]
  _write_record(tmp_path / "train-00000-of-00001.tfrecord", examples)
  pattern = str(tmp_path / "train-*.tfrecord")
  batches = [b for _, b in zip(range(6), _train_ds(pattern, 7))]
  again = [b for _, b in zip(range(6), _train_ds(pattern, 7))]
  other = [b for _, b in zip(range(6), _train_ds(pattern, 8))]
  for (f1, l1), (f2, l2) in zip(batches, again):
    np.testing.assert_array_equal(f1["image"], f2["image"])
    np.testing.assert_array_equal(l1["masks"], l2["masks"])
  assert any(not np.array_equal(a[0]["image"], b[0]["image"]) for a, b in zip(batches, other))
  for features, labels in batches:
    pan, red = labels["panoptic"].numpy(), features["image"].numpy()[..., 0]
    assert pan.shape == (2, 9, 9) and features["image"].shape == (2, 9, 9, 3)
    real = pan != VOID  # image and label stay aligned through crop/flip/pad
    np.testing.assert_array_equal(red[real], np.vectorize(_code)(pan[real]))
    for b in range(2):
      _check({k: v[b] for k, v in labels.items() if k in reference_targets(pan[b], 8)},
             reference_targets(pan[b], 8))


def test_train_pipeline_label_stride_2(tmp_path):
  examples = [(_code_image(p)[0], p) for p in (hand_label(12, 14), hand_label(7, 13))]
  _write_record(tmp_path / "train-00000-of-00001.tfrecord", examples)
  batches = [b for _, b in zip(range(4), _train_ds(str(tmp_path / "train-*"), 7,
                                                     crop_size=(13, 13), label_stride=2))]
  for _, labels in batches:
    pan = labels["panoptic"].numpy()
    assert labels["masks"].shape == (2, 7, 7, 8)
    for key in ("semantic_strided", "ignore_strided", "pixel_weights"):
      assert labels[key].shape == (2, 7, 7), key
    for b in range(2):
      want = reference_targets(pan[b], 8, stride=2)
      _check({k: v[b] for k, v in labels.items() if k in want}, want)


def test_scale_augmentation_keeps_label_values(tmp_path):
  pan = hand_label(40, 40)
  _write_record(tmp_path / "train-00000-of-00001.tfrecord", [(_code_image(pan)[0], pan)])
  allowed = set(np.unique(pan).tolist()) | {VOID}
  sizes = set()
  for _, (_, labels) in zip(range(4), _train_ds(str(tmp_path / "train-*"), 1, crop_size=(33, 33),
                                                 min_scale=0.5, max_scale=2.0)):
    values = set(np.unique(labels["panoptic"]).tolist())
    assert values <= allowed
    sizes.add(int((labels["panoptic"].numpy() != VOID).sum()))
  assert len(sizes) > 1  # the scale varies


@pytest.mark.parametrize("num_files", [3, 1])
def test_input_context_shards_disjointly(tmp_path, num_files):
  pans = [hand_label() + 0 for _ in range(6)]
  for f in range(num_files):
    part = [(_code_image(p)[0], p) for p in pans[f::num_files]]
    _write_record(tmp_path / f"val-{f:05d}-of-{num_files:05d}.tfrecord", part, f"f{f}_")
  seen = []
  for pipeline_id in range(2):
    ctx = tf.distribute.InputContext(2, pipeline_id, 2)
    ds = input_pipeline.build_dataset(str(tmp_path / "val-*"), INFO, False, 4,
                                      crop_size=(13, 13), input_context=ctx)
    ids = [i for _, labels in ds for i in labels["image_id"].numpy().tolist()]
    assert max(len(labels["image_id"]) for _, labels in ds) <= 2  # per-replica batch
    seen.append(ids)
  all_ids = {f"f{f}_{i}".encode() for f in range(num_files)
             for i in range(len(pans[f::num_files]))}
  assert len(seen[0]) + len(seen[1]) == len(all_ids) == 6
  assert set(seen[0]) | set(seen[1]) == all_ids and seen[0] and seen[1]


def test_works_with_distribute_datasets_from_function(tmp_path):
  pan = hand_label()
  _write_record(tmp_path / "train-00000-of-00001.tfrecord", [(_code_image(pan)[0], pan)])
  strategy = tf.distribute.get_strategy()
  dist = strategy.distribute_datasets_from_function(input_pipeline.dataset_fn_for_strategy(
      str(tmp_path / "train-*"), INFO, True, 2, crop_size=(9, 9), max_segments=4))
  features, labels = next(iter(dist))
  assert features["image"].shape == (2, 9, 9, 3) and labels["masks"].shape == (2, 3, 3, 4)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="4k\\+1"):
    input_pipeline.build_dataset("x", INFO, True, 2, crop_size=(640, 640))
  for stride in (3, 8, 0, 2.5):
    with pytest.raises(ValueError, match="label_stride"):
      input_pipeline.build_dataset("x", INFO, True, 2, crop_size=(9, 9), label_stride=stride)
  with pytest.raises(ValueError, match="no TFRecord files match"):
    input_pipeline.build_dataset("/nonexistent/*.tfrecord", INFO, True, 2, crop_size=(9, 9))


def test_random_crop_and_flip_flips_some_of_the_time():
  label = tf.reshape(tf.range(81), [9, 9])
  image = tf.cast(tf.stack([label] * 3, -1), tf.float32)
  flips = 0
  for i in range(20):
    im, lb = preprocessing.random_crop_and_flip(image, label, (9, 9), -1,
                                                tf.constant([i, 0], tf.int64))
    flipped = np.array_equal(lb, label.numpy()[:, ::-1])
    assert flipped or np.array_equal(lb, label)
    np.testing.assert_array_equal(im[..., 0], lb)
    flips += flipped
  assert 3 <= flips <= 17


def test_iterator_checkpoint_resumes_exactly(tmp_path):
  pans = [hand_label(12 + i, 14) for i in range(3)]
  _write_record(tmp_path / "train-00000-of-00001.tfrecord",
                [(_code_image(p)[0], p) for p in pans])
  it = iter(_train_ds(str(tmp_path / "train-*"), 3, min_scale=0.5, max_scale=1.5))
  for _ in range(2):
    next(it)
  ckpt = tf.train.Checkpoint(iterator=it)
  prefix = ckpt.save(str(tmp_path / "ckpt" / "it"))
  first = [next(it) for _ in range(3)]
  ckpt.restore(prefix)
  for (f1, l1), (f2, l2) in zip(first, [next(it) for _ in range(3)]):
    np.testing.assert_array_equal(f1["image"], f2["image"])
    np.testing.assert_array_equal(l1["panoptic"], l2["panoptic"])
