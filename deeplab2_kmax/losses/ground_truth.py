"""Loss-side view of the input pipeline's labels (docs/DESIGN.md, "labels" dict).

All kMaX losses work on the flattened pixels P = Hs * Ws of the label grid, the stride
of `build_dataset(label_stride=...)`, which must be the model's `output_stride` (the
stride of `mask_logits` / `pixel_embeddings`: 4 by default, 2 for the Cityscapes
configs). This module turns the labels dict into the tensors they share, computed once
per step:

* a ground-truth segment is used only if `mask_valid` is 1 *and* it has at least one
  pixel at the loss resolution (a tiny segment can vanish at stride 4; deeplab2 drops
  those too);
* a pixel is "in a segment" when it lies in one of those masks; pixels outside every
  segment (void, crowd, padding) are the void region of the PQ-style loss.

Coarser predictions (the semantic logits stay at stride 4 when the label grid is at
stride 2): `subsample_to(gt, (h, w))` takes the label-grid pixels `[::r, ::r]` with
`r = (Hs - 1) / (h - 1)` (deeplab2's `strided_downsample` of the labels). Crops are
4k+1, so the stride-4 grid points are exactly the even stride-2 points and this is the
stride-4 target itself, not an approximation (the inverse areas used for pixel sampling
are the stride-2 ones, which only changes the sampling odds of aliased tiny segments).
"""
from typing import Mapping, NamedTuple, Sequence, Tuple

import tensorflow as tf


class GroundTruth(NamedTuple):
  """Flattened ground truth at the label grid (the loss resolution)."""
  masks: tf.Tensor            # [B, P, M] float 0/1, zero for unused slots
  classes: tf.Tensor          # [B, M] int32 train ids (num_classes for unused slots)
  valid: tf.Tensor            # [B, M] float 0/1: slot used by the losses
  is_thing: tf.Tensor         # [B, M] float 0/1 (all 1 if labels lack mask_is_thing)
  area: tf.Tensor             # [B, M] float pixel count on the label grid
  in_segment: tf.Tensor       # [B, P] float 0/1: pixel inside a used segment
  pixel_weights: tf.Tensor    # [B, P] float, 0 at ignored pixels
  semantic: tf.Tensor         # [B, P] int32 train id, clipped to >= 0
  semantic_weights: tf.Tensor  # [B, P] float: pixel_weights * not-ignored
  inverse_area: tf.Tensor     # [B, P] float: P / area of the pixel's segment
  grid: Tuple[int, int] = (0, 0)  # static (Hs, Ws) of the flattened pixels


class PixelTargets(NamedTuple):
  """The per-pixel fields of a GroundTruth on a (possibly coarser) grid."""
  semantic: tf.Tensor          # [B, P'] int32
  semantic_weights: tf.Tensor  # [B, P'] float
  inverse_area: tf.Tensor      # [B, P'] float
  in_segment: tf.Tensor        # [B, P'] float


def flatten_pixels(tensor: tf.Tensor) -> tf.Tensor:
  """[B, H, W, ...] -> [B, H * W, ...] (static H, W)."""
  shape = tensor.shape
  if shape[1] is None or shape[2] is None:
    raise ValueError(f"loss tensors need static spatial dims, got {shape}")
  new_shape = [-1, shape[1] * shape[2]] + [
      d if d is not None else tf.shape(tensor)[i + 3]
      for i, d in enumerate(shape[3:])]
  return tf.reshape(tensor, new_shape)


def prepare_ground_truth(labels: Mapping[str, tf.Tensor],
                         num_classes: int) -> GroundTruth:
  """Builds the GroundTruth from the input pipeline's labels dict."""
  for key in ("masks", "mask_classes", "mask_valid", "semantic_strided",
              "ignore_strided", "pixel_weights"):
    if key not in labels:
      raise KeyError(f"KMaXLoss needs labels[{key!r}] (see docs/DESIGN.md)")
  masks = flatten_pixels(tf.cast(labels["masks"], tf.float32))
  area = tf.reduce_sum(masks, axis=1)
  valid = tf.cast(labels["mask_valid"], tf.float32) * tf.cast(area > 0.5,
                                                              tf.float32)
  masks = masks * valid[:, None, :]
  area = area * valid
  classes = tf.where(valid > 0, tf.cast(labels["mask_classes"], tf.int32),
                     num_classes)
  if "mask_is_thing" in labels:
    is_thing = tf.cast(labels["mask_is_thing"], tf.float32) * valid
  else:
    is_thing = valid
  in_segment = tf.minimum(tf.reduce_sum(masks, axis=-1), 1.0)
  not_ignored = 1.0 - flatten_pixels(tf.cast(labels["ignore_strided"],
                                             tf.float32))
  pixel_weights = flatten_pixels(tf.cast(labels["pixel_weights"], tf.float32))
  semantic = flatten_pixels(tf.cast(labels["semantic_strided"], tf.int32))
  semantic_weights = pixel_weights * not_ignored
  num_pixels = float(masks.shape[1])
  pixel_area = tf.einsum("bpm,bm->bp", masks, area)
  inverse_area = num_pixels / tf.maximum(pixel_area, 1.0)
  return GroundTruth(
      masks=masks, classes=classes, valid=valid, is_thing=is_thing, area=area,
      in_segment=in_segment, pixel_weights=pixel_weights,
      semantic=tf.clip_by_value(semantic, 0, num_classes - 1),
      semantic_weights=semantic_weights, inverse_area=inverse_area,
      grid=(int(labels["masks"].shape[1]), int(labels["masks"].shape[2])))


def subsampling_ratio(grid: Sequence[int], target: Sequence[int], name: str) -> int:
  """The integer r with target = len(range(0, grid, r)) exactly on both axes.

  Raises a ValueError naming `name` when no such r exists (target finer than the
  label grid, or not on its points).
  """
  ratios, ok = set(), len(grid) == len(target) == 2
  for g, t in zip(grid, target):
    if not 1 <= t <= g:
      ok = False
    elif t > 1:  # the last target point must sit on the last grid point
      ok = ok and (g - 1) % (t - 1) == 0
      ratios.add((g - 1) // (t - 1))
  ratio = ratios.pop() if len(ratios) == 1 else max(grid)
  ok = ok and len(ratios) == 0 and all(t > 1 or ratio >= g
                                       for g, t in zip(grid, target))
  if not ok:
    raise ValueError(
        f"{name} has spatial shape {tuple(target)}, which is not a strided subsample "
        f"[::r, ::r] of the label grid {tuple(grid)}; the labels must be at the "
        f"model's output_stride (build_dataset(label_stride=model.output_stride)) "
        f"and the crop 4k+1")
  return ratio


def subsample_to(gt: GroundTruth, target: Sequence[int], name: str) -> PixelTargets:
  """The per-pixel targets at the label-grid points [::r, ::r] covering `target`."""
  ratio = subsampling_ratio(gt.grid, target, name)

  def pick(flat):
    if ratio == 1:
      return flat
    grid = tf.reshape(flat, [-1, gt.grid[0], gt.grid[1]])
    return flatten_pixels(grid[:, ::ratio, ::ratio])

  return PixelTargets(semantic=pick(gt.semantic),
                      semantic_weights=pick(gt.semantic_weights),
                      inverse_area=pick(gt.inverse_area),
                      in_segment=pick(gt.in_segment))
