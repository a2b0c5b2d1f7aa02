"""Tests for the kMaX pixel decoder."""

import numpy as np
import pytest

from deeplab2_kmax.layers import test_utils
from deeplab2_kmax import pixel_decoder

TINY = dict(dims=(8, 8, 4, 4), num_blocks=(1, 2, 1, 1), num_heads=2)
CITYSCAPES_TINY = dict(dims=(8, 8, 4, 4, 2), num_blocks=(1, 1, 1, 1, 1),
                       block_types=("axial", "axial", "bottleneck", "bottleneck",
                                    "bottleneck"), num_heads=2)


def _endpoints(channels=(8, 12, 16, 20), sizes=(9, 5, 3, 2), seed=0, prefix="res"):
  rng = np.random.default_rng(seed)
  return {f"{prefix}{level}": rng.normal(size=(2, s, s, c)).astype("float32")
          for level, c, s in zip((2, 3, 4, 5), channels, sizes)}


def test_tiny_decoder_shapes_and_endpoint_preference():
  decoder = pixel_decoder.KMaXPixelDecoder(**TINY)
  endpoints = _endpoints()
  outputs = decoder(endpoints)
  assert [tuple(o.shape) for o in outputs] == [
      (2, 2, 2, 32), (2, 3, 3, 32), (2, 5, 5, 16), (2, 9, 9, 16)]
  # Un-activated "stage*" features win over "res*" when both exist.
  staged = dict(endpoints)
  staged.update({k.replace("res", "stage"): v + 1.0 for k, v in endpoints.items()})
  with_stage = decoder(staged)[-1]
  staged["res5"] = staged["res5"] * 0.0
  np.testing.assert_array_equal(np.asarray(decoder(staged)[-1]),
                                np.asarray(with_stage))
  clone = pixel_decoder.KMaXPixelDecoder.from_config(decoder.get_config())
  assert clone.get_config() == decoder.get_config()
  with pytest.raises(ValueError, match="missing"):
    decoder({"res5": endpoints["res5"]})


def test_stride2_stage_with_and_without_stem():
  endpoints = _endpoints()
  decoder = pixel_decoder.KMaXPixelDecoder(**CITYSCAPES_TINY)
  outputs = decoder(endpoints)  # no stem (e.g. ConvNeXt): 2 * 9 - 1 grid
  assert tuple(outputs[-1].shape) == (2, 17, 17, 8)
  endpoints["stem"] = np.ones((2, 17, 17, 6), "float32")
  decoder = pixel_decoder.KMaXPixelDecoder(**CITYSCAPES_TINY)
  outputs = decoder(endpoints)
  assert tuple(outputs[-1].shape) == (2, 17, 17, 8)
  assert decoder.fusions[-1].skip_conv is not None


def test_full_size_parameter_count():
  decoder = pixel_decoder.KMaXPixelDecoder()
  decoder(_endpoints((256, 512, 1024, 2048), (7, 4, 2, 2)))
  count = test_utils.count_params(decoder)
  assert abs(count - 21.15e6) / 21.15e6 < 0.02  # docs/PAPER.md §5 split
  assert count == 21151040


def test_resized_fuse_matches_manual_computation_and_round_trips():
  rng = np.random.default_rng(3)
  decoder_feature = rng.normal(size=(1, 3, 3, 6)).astype("float32")
  skip = rng.normal(size=(1, 5, 5, 4)).astype("float32")
  fuse = pixel_decoder.ResizedFuse(4, activation="relu")
  out = np.asarray(fuse(decoder_feature, skip, training=False))
  assert fuse.skip_conv is None  # the skip already has the target width
  projected = np.asarray(fuse.decoder_conv(np.maximum(decoder_feature, 0)))
  # 3 -> 5 with aligned corners: even outputs are exact, odd ones are midpoints.
  up = np.zeros((1, 5, 5, 4), "float32")
  up[:, ::2, ::2] = projected
  up[:, 1::2, ::2] = (projected[:, :-1] + projected[:, 1:]) / 2
  up[:, :, 1::2] = (up[:, :, :-1:2] + up[:, :, 2::2]) / 2
  np.testing.assert_allclose(out, up + skip, atol=1e-5)
  clone = pixel_decoder.ResizedFuse.from_config(fuse.get_config())
  assert clone.get_config() == fuse.get_config()


def test_fifth_stage_fuses_stage1_at_its_own_stride():
  # deeplab2 fuses the backbone's "stage1" in the fifth (Cityscapes) stage at that
  # feature's resolution: stride 2 for the ResNets (stem), stride 4 for ConvNeXt.
  endpoints = _endpoints(prefix="stage")
  endpoints.update(_endpoints(prefix="res", seed=1))
  rng = np.random.default_rng(5)
  convnext_like = dict(endpoints, stage1=rng.normal(size=(2, 9, 9, 6)).astype("float32"))
  decoder = pixel_decoder.KMaXPixelDecoder(**CITYSCAPES_TINY)
  outputs = decoder(convnext_like)
  assert tuple(outputs[-1].shape) == (2, 9, 9, 8)  # stays at stride 4
  assert decoder.fusions[-1].skip_conv is not None
  # "stage1" (pre-activation) wins over the activated "stem" when both exist.
  resnet_like = dict(endpoints,
                     stage1=rng.normal(size=(2, 17, 17, 6)).astype("float32"))
  resnet_like["stem"] = np.maximum(resnet_like["stage1"], 0)
  decoder = pixel_decoder.KMaXPixelDecoder(**CITYSCAPES_TINY)
  out = np.asarray(decoder(resnet_like)[-1])
  assert out.shape == (2, 17, 17, 8)
  resnet_like["stem"] = resnet_like["stem"] * 0.0 + 3.0
  np.testing.assert_array_equal(np.asarray(decoder(resnet_like)[-1]), out)
  assert pixel_decoder.finest_stride(4) == 4
  assert pixel_decoder.finest_stride(5) == 2  # unknown backbone: stem at stride 2


def test_stage_and_res_endpoints_give_the_same_parameter_count():
  # The pre-activation features have the shapes of the activated ones, so switching
  # endpoints (or falling back to res2..res5) leaves every weight shape unchanged.
  counts = []
  for prefix in ("res", "stage"):
    decoder = pixel_decoder.KMaXPixelDecoder(**TINY)
    decoder(_endpoints(prefix=prefix))
    counts.append([tuple(w.shape) for w in decoder.weights])
  assert counts[0] == counts[1]
