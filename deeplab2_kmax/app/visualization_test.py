"""Tests for deeplab2_kmax/app/visualization.py on hand-made label maps."""
import numpy as np
import pytest
from PIL import Image

from deeplab2_kmax.app import visualization as vis

D = 256
VOID = 255 * D


def _scene():
  """40x60: stuff class 1 on top, two instances of thing class 0 below, a void strip."""
  pan = np.full((40, 60), 1 * D, np.int32)
  pan[20:, :30] = 0 * D + 1
  pan[20:, 30:] = 0 * D + 2
  pan[:, 55:] = VOID
  return pan


def test_palette_distinct_and_deterministic():
  a = vis.color_palette(128)
  assert a.shape == (128, 3) and a.dtype == np.uint8
  assert len({tuple(c) for c in a}) == 128
  np.testing.assert_array_equal(a, vis.color_palette(128))
  assert not np.array_equal(a, vis.color_palette(128, seed=5))
  with pytest.raises(ValueError, match="num_colors"):
    vis.color_palette(-1)


def test_colorize_panoptic_colors_segments():
  pan = _scene()
  rgb = vis.colorize_panoptic(pan, D, 255, {1: (10, 200, 30), 0: (220, 20, 60)})
  np.testing.assert_array_equal(rgb[0, 0], (10, 200, 30))   # stuff keeps its colour
  np.testing.assert_array_equal(rgb[0, 58], (0, 0, 0))      # void is black
  # Two instances of the same thing class get different shades.
  assert not np.array_equal(rgb[30, 0], rgb[30, 40])
  # A segment is painted with one colour.
  assert len({tuple(c) for c in rgb[20:, :30].reshape(-1, 3)}) == 1


def test_segment_contours_marks_both_sides_of_borders():
  ids = np.zeros((4, 6), np.int32)
  ids[:, 3:] = 1
  edge = vis.segment_contours(ids)
  expected = np.zeros((4, 6), bool)
  expected[:, 2:4] = True
  np.testing.assert_array_equal(edge, expected)


def test_overlay_blends_contours_and_writes_names():
  pan = _scene()
  image = np.full((40, 60, 3), 100, np.uint8)
  names = {0: "person", 1: "sky"}
  colors = {0: (220, 20, 60), 1: (0, 0, 255)}
  out = vis.overlay_panoptic(image, pan, D, 255, names, colors, alpha=0.5,
                             draw_contours=False, min_label_fraction=2.0)
  assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
  np.testing.assert_array_equal(out[0, 0], (50, 50, 178))   # 0.5*100 + 0.5*(0,0,255)
  np.testing.assert_array_equal(out[0, 58], (100, 100, 100))  # void keeps the image
  with_contours = vis.overlay_panoptic(image, pan, D, 255, names, colors, alpha=0.5,
                                       min_label_fraction=2.0)
  np.testing.assert_array_equal(with_contours[19, 10], vis.CONTOUR_COLOR)
  np.testing.assert_array_equal(with_contours[5, 10], out[5, 10])
  # Names on large segments change pixels; nothing is written when no segment is big.
  labelled = vis.overlay_panoptic(image, pan, D, 255, names, colors, alpha=0.5,
                                  draw_contours=False, min_label_fraction=0.1)
  assert (labelled != out).any(axis=-1).sum() > 20


def test_overlay_rejects_bad_input():
  pan = _scene()
  with pytest.raises(ValueError, match="panoptic shape"):
    vis.overlay_panoptic(np.zeros((10, 10, 3), np.uint8), pan, D, 255, {}, {})
  with pytest.raises(ValueError, match="uint8"):
    vis.overlay_panoptic(np.zeros((40, 60, 3), np.float32), pan, D, 255, {}, {})


def test_colorize_clusters_same_cluster_same_colour():
  a = np.array([[0, 0, 5], [5, 7, 0]])
  rgb = vis.colorize_clusters(a, 8)
  np.testing.assert_array_equal(rgb[0, 0], rgb[1, 2])
  np.testing.assert_array_equal(rgb[0, 2], rgb[1, 0])
  assert not np.array_equal(rgb[0, 0], rgb[0, 2])
  with pytest.raises(ValueError, match="cluster ids"):
    vis.colorize_clusters(a, 6)
  # With `used`, the i-th used cluster gets palette colour i (far-apart hues).
  rgb = vis.colorize_clusters(a, 8, used=[0, 5, 7])
  palette = vis.color_palette(3, seed=3)
  np.testing.assert_array_equal(rgb[0, 2], palette[1])
  np.testing.assert_array_equal(rgb[1, 1], palette[2])
  with pytest.raises(ValueError, match=r"\[7\] are not in"):
    vis.colorize_clusters(a, 8, used=[0, 5])


def test_cluster_figure_writes_png(tmp_path):
  image = np.random.default_rng(0).integers(0, 255, (33, 49, 3), dtype=np.uint8)
  layers = [np.random.default_rng(i).integers(0, 16, (s, s + 1)) for i, s in
            enumerate((2, 2, 3, 3, 5, 5))]
  path = tmp_path / "fig.png"
  vis.cluster_figure(image, layers, image, num_clusters=16, output_path=str(path))
  with Image.open(path) as png:
    assert png.format == "PNG" and png.size[0] > 300
  with pytest.raises(ValueError, match="titles"):
    vis.cluster_figure(image, layers, image, 16, layer_titles=["a"])


def test_overlay_scale_upsamples():
  pan = _scene()
  image = np.full((40, 60, 3), 100, np.uint8)
  big = vis.overlay_panoptic(image, pan, D, 255, {}, {1: (0, 0, 255)}, alpha=0.5,
                             draw_contours=False, min_label_fraction=2.0, scale=3)
  small = vis.overlay_panoptic(image, pan, D, 255, {}, {1: (0, 0, 255)}, alpha=0.5,
                               draw_contours=False, min_label_fraction=2.0)
  assert big.shape == (120, 180, 3)
  np.testing.assert_array_equal(big[::3, ::3], small)
  with pytest.raises(ValueError, match="scale"):
    vis.overlay_panoptic(image, pan, D, 255, {}, {}, scale=0)


def test_label_anchor_is_the_most_interior_pixel():
  mask = np.zeros((30, 40), bool)
  mask[5:25, 5:25] = True   # a 20x20 block ...
  mask[28:, :] = True       # ... and a thin strip whose centroid pulls the mean down
  x, y = vis._label_anchor(mask)
  assert 13 <= x <= 16 and 13 <= y <= 16
