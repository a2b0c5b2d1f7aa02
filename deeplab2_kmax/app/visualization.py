"""Pictures of predictions: colour palettes, panoptic overlays and the cluster figure.

Everything here works on plain numpy arrays in the internal label encoding of
docs/DESIGN.md (`semantic * label_divisor + instance`, void = `ignore_label *
label_divisor`), so it serves predictions from the Python path, a SavedModel or
ground truth alike.

* `overlay_panoptic` — the image blended with one colour per segment (the category's
  colour for stuff, a shade of it per thing instance), white segment contours and the
  category name written on segments covering at least `min_label_fraction` of the image.
* `cluster_figure` — the paper's appendix figure: input, the pixel–cluster assignment
  (argmax over clusters) after each kMaX decoder layer, then the panoptic prediction.
"""
import colorsys
from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

VOID_COLOR = (0, 0, 0)
CONTOUR_COLOR = (255, 255, 255)


def color_palette(num_colors: int, seed: int = 0) -> np.ndarray:
  """`num_colors` distinct, saturated RGB colours as uint8 [num_colors, 3].

  Hues follow the golden-ratio sequence (neighbouring indices get far-apart hues);
  saturation and value cycle through three levels so that large palettes (the 128
  clusters of the decoder) stay distinguishable. Deterministic for a given `seed`.
  """
  if num_colors < 0:
    raise ValueError(f"num_colors must be >= 0, got {num_colors}")
  golden = 0.618033988749895
  colors = np.zeros((num_colors, 3), np.uint8)
  for i in range(num_colors):
    hue = (seed * 0.137 + i * golden) % 1.0
    sat = (0.95, 0.65, 0.8)[i % 3]
    val = (0.95, 0.8, 0.65)[(i // 3) % 3]
    colors[i] = np.round(np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255)
  return colors


def _instance_shade(color: Sequence[int], instance: int) -> np.ndarray:
  """A per-instance variation of a category colour (instance 0 keeps the colour)."""
  base = np.asarray(color, np.float64)
  if instance == 0:
    return base.astype(np.uint8)
  rng = np.random.default_rng(instance * 7919 + int(base.sum()))
  return np.clip(base + rng.integers(-60, 61, size=3), 0, 255).astype(np.uint8)


def colorize_panoptic(panoptic: np.ndarray, label_divisor: int, ignore_label: int,
                      category_colors: Mapping[int, Sequence[int]]) -> np.ndarray:
  """RGB uint8 [H, W, 3] image of a panoptic map: one colour per segment, void black.

  `category_colors` maps train id -> RGB. Train ids missing from it get a palette colour.
  """
  panoptic = np.asarray(panoptic)
  if panoptic.ndim != 2:
    raise ValueError(f"panoptic must be [H, W], got shape {panoptic.shape}")
  rgb = np.zeros(panoptic.shape + (3,), np.uint8)
  fallback = color_palette(256, seed=1)
  for value in np.unique(panoptic):
    semantic, instance = divmod(int(value), label_divisor)
    if semantic == ignore_label:
      color = np.asarray(VOID_COLOR, np.uint8)
    else:
      base = category_colors.get(semantic, fallback[semantic % len(fallback)])
      color = _instance_shade(base, instance)
    rgb[panoptic == value] = color
  return rgb


def segment_contours(ids: np.ndarray) -> np.ndarray:
  """Bool [H, W]: True on pixels whose right or lower neighbour has a different id
  (and on that neighbour), i.e. a 2-pixel-wide line along every segment border."""
  ids = np.asarray(ids)
  edge = np.zeros(ids.shape, bool)
  horizontal = ids[:, 1:] != ids[:, :-1]
  vertical = ids[1:, :] != ids[:-1, :]
  edge[:, 1:] |= horizontal
  edge[:, :-1] |= horizontal
  edge[1:, :] |= vertical
  edge[:-1, :] |= vertical
  return edge


def _label_anchor(mask: np.ndarray) -> tuple:
  """(x, y) of the segment pixel farthest from the segment's border (its most interior
  point, inside the segment even for non-convex or fragmented shapes)."""
  from scipy import ndimage
  distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
  y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
  return int(x), int(y)


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow without sized default fonts.
    return ImageFont.load_default()


def overlay_panoptic(image: np.ndarray, panoptic: np.ndarray, label_divisor: int,
                     ignore_label: int, category_names: Mapping[int, str],
                     category_colors: Mapping[int, Sequence[int]], alpha: float = 0.55,
                     min_label_fraction: float = 0.01, draw_contours: bool = True,
                     font_size: Optional[int] = None, scale: int = 1) -> np.ndarray:
  """The image blended with segment colours, contours and category names.

  Args:
    image: uint8 [H, W, 3].
    panoptic: int [H, W] in the internal encoding.
    category_names / category_colors: train id -> name / RGB.
    alpha: weight of the segment colour (void pixels keep the image).
    min_label_fraction: segments covering at least this fraction of the image get
      their category name written at their most central pixel.
    scale: integer upscaling (nearest) before drawing, for small images: thinner
      contours and sharper names relative to the picture.
  Returns:
    uint8 [H * scale, W * scale, 3].
  """
  image = np.asarray(image)
  panoptic = np.asarray(panoptic)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  if panoptic.shape != image.shape[:2]:
    raise ValueError(f"panoptic shape {panoptic.shape} != image shape {image.shape[:2]}")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  if scale < 1:
    raise ValueError(f"scale must be a positive integer, got {scale}")
  if scale > 1:
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    panoptic = panoptic.repeat(scale, axis=0).repeat(scale, axis=1)
  colors = colorize_panoptic(panoptic, label_divisor, ignore_label, category_colors)
  void = panoptic // label_divisor == ignore_label
  blended = image.astype(np.float32) * (1 - alpha) + colors.astype(np.float32) * alpha
  out = np.where(void[..., None], image.astype(np.float32), blended)
  out = np.clip(np.round(out), 0, 255).astype(np.uint8)
  if draw_contours:
    out[segment_contours(panoptic)] = CONTOUR_COLOR
  canvas = Image.fromarray(out)
  draw = ImageDraw.Draw(canvas)
  height, width = panoptic.shape
  font = _font(font_size or max(10, min(height, width) // 25))
  min_area = min_label_fraction * height * width
  for value in np.unique(panoptic):
    semantic = int(value) // label_divisor
    if semantic == ignore_label:
      continue
    mask = panoptic == value
    if mask.sum() < max(min_area, 1):
      continue
    name = category_names.get(semantic, str(semantic))
    x, y = _label_anchor(mask)
    draw.text((x, y), name, fill=(255, 255, 255), font=font, anchor="mm",
              stroke_width=2, stroke_fill=(0, 0, 0))
  return np.asarray(canvas)


def colorize_clusters(assignment: np.ndarray, num_clusters: int,
                      used: Optional[Sequence[int]] = None) -> np.ndarray:
  """RGB uint8 [h, w, 3]: pixels assigned to the same cluster share a colour.

  The colour depends only on the cluster id (and on `used`, the ids drawn together, e.g.
  those of all decoder layers of one figure), so a cluster keeps its colour in every
  layer. The i-th used id gets palette colour i: the few clusters of a picture get
  far-apart hues. Default `used`: all `num_clusters` ids.
  """
  assignment = np.asarray(assignment)
  if assignment.size and (assignment.min() < 0 or assignment.max() >= num_clusters):
    raise ValueError(f"cluster ids must lie in [0, {num_clusters}), got "
                     f"[{assignment.min()}, {assignment.max()}]")
  used = np.arange(num_clusters) if used is None else np.unique(np.asarray(used))
  missing = np.setdiff1d(np.unique(assignment), used)
  if missing.size:
    raise ValueError(f"cluster ids {missing.tolist()} are not in `used`")
  lut = np.zeros(num_clusters, np.int64)
  lut[used] = np.arange(len(used))
  return color_palette(max(len(used), 1), seed=3)[lut[assignment]]


def cluster_figure(image: np.ndarray, assignments: Sequence[np.ndarray],
                   panoptic_rgb: np.ndarray, num_clusters: int,
                   layer_titles: Optional[Sequence[str]] = None, output_path=None):
  """The appendix figure: input | cluster assignment per decoder layer | prediction.

  Args:
    image: uint8 [H, W, 3].
    assignments: per decoder layer an int [h_l, w_l] argmax-over-clusters map covering
      the image (any resolution; shown stretched to the image's aspect).
    panoptic_rgb: uint8 [H, W, 3] (e.g. `overlay_panoptic` output).
    num_clusters: N, the number of cluster centres (fixes the colour table).
    layer_titles: one title per layer (default "layer i").
    output_path: when given, the figure is written there as a PNG.
  Returns:
    the matplotlib Figure.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if not assignments:
    raise ValueError("cluster_figure needs at least one decoder layer's assignment")
  titles = list(layer_titles or [f"layer {i + 1}" for i in range(len(assignments))])
  if len(titles) != len(assignments):
    raise ValueError(f"{len(titles)} titles for {len(assignments)} layers")
  used = np.unique(np.concatenate([np.asarray(a).reshape(-1) for a in assignments]))
  panels = ([("input", np.asarray(image))]
            + [(t, colorize_clusters(a, num_clusters, used))
               for t, a in zip(titles, assignments)]
            + [("panoptic prediction", np.asarray(panoptic_rgb))])
  # One row for up to 5 panels (the (1, 1, 1) decoder), else two rows (8 for (2, 2, 2)).
  columns = len(panels) if len(panels) <= 5 else -(-len(panels) // 2)
  rows = -(-len(panels) // columns)
  height, width = np.asarray(image).shape[:2]
  panel_w = 3.0
  panel_h = panel_w * height / max(width, 1)
  fig, axes = plt.subplots(rows, columns, figsize=(panel_w * columns, (panel_h + 0.4) * rows),
                           squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for ax, (title, picture) in zip(axes.ravel(), panels):
    ax.imshow(picture, interpolation="nearest", extent=(0, width, height, 0))
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  if output_path is not None:
    fig.savefig(output_path, dpi=100)
    plt.close(fig)
  return fig
