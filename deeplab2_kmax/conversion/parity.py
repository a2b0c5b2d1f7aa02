"""Our model's outputs under deeplab2's names and layouts, and their comparison.

`deeplab2_outputs` runs the model (float32, `training=False`) and the mask-wise merge on
one float image and returns the arrays deeplab2 reports for it, named as deeplab2 names
them: `final/transformer_class_logits` (deeplab2's class-channel order),
`final/pixel_space_mask_logits`, `final/pixel_space_normalized_feature`,
`final/panoptic_pred` (deeplab2's encoding, see `label_space`), per k-means decoder
layer `aux{i}/transformer_class_logits`, `aux{i}/pixel_space_mask_logits`,
`aux{i}/pixel_space_normalized_feature`, `aux{i}/cluster_assignment`, and the backbone
and pixel-decoder endpoints (`encoder/stage{k}`, `encoder/res{k}`,
`pixel_decoder/decoder_stage{k}`, `pixel_decoder/decoder_output`).

`compare` measures them against a reference file of deeplab2's outputs: per float array
the max absolute error and that error relative to the reference's largest magnitude; per
k-means map the assignments that differ, excused where the reference's own top-2
margin is a near tie; per panoptic map the pixels that differ.
"""

import dataclasses
from typing import Dict, List, Mapping, Optional

import numpy as np

from deeplab2_kmax.conversion import label_space as label_space_lib
from deeplab2_kmax import post_processing
from deeplab2_kmax.core import output_keys

RELATIVE_TOLERANCE = 1e-3   # of the reference's largest magnitude
NEAR_TIE = 1e-3             # relative top-2 margin under which an argmax may flip
PANOPTIC_KEYS = ("final/panoptic_pred", "final_no_area_limit/panoptic_pred")


def _np(x):
  return np.asarray(x)


def deeplab2_outputs(model, merger, space: label_space_lib.LabelSpace, image: np.ndarray,
                     label_divisor: int, ignore_label: int,
                     no_area_limit_merger=None) -> Dict[str, np.ndarray]:
  """deeplab2-named outputs of `model` + `merger` for `image` (float32 [1, H, W, 3]).

  The mergers (`MaskWiseMerger`) must be built with mask_stride=model.output_stride
  (2 for the Cityscapes R50 / MaX-S models): checked, ValueError otherwise.
  """
  for merge in (merger, no_area_limit_merger):
    if merge is not None:
      post_processing.check_merger_stride(model, merge)
  image = np.asarray(image, np.float32)
  outputs = model(image, training=False)
  result = {}
  result.update(_head_outputs("final", outputs, space))
  for i, aux in enumerate(outputs[output_keys.AUX_OUTPUTS]):
    result.update(_head_outputs(f"aux{i}", aux, space))
    assignment = outputs[output_keys.CLUSTER_ASSIGNMENTS][i]
    result[f"aux{i}/cluster_assignment"] = _np(assignment).astype(np.int32)
  size = image.shape[1:3]
  for key, merge in (("final", merger), ("final_no_area_limit", no_area_limit_merger)):
    if merge is None:
      continue
    merged = merge({output_keys.CLASS_LOGITS: outputs[output_keys.CLASS_LOGITS],
                    output_keys.MASK_LOGITS: outputs[output_keys.MASK_LOGITS]}, size)
    result[f"{key}/panoptic_pred"] = space.panoptic_to_deeplab2(
        _np(merged["panoptic"]), label_divisor, ignore_label)
  result.update(_endpoints(model, image))
  return result


def _head_outputs(prefix: str, prediction: Mapping, space) -> Dict[str, np.ndarray]:
  return {
      f"{prefix}/transformer_class_logits":
          space.class_logits_to_deeplab2(_np(prediction[output_keys.CLASS_LOGITS])),
      f"{prefix}/pixel_space_mask_logits": _np(prediction[output_keys.MASK_LOGITS]),
      f"{prefix}/pixel_space_normalized_feature":
          _np(prediction[output_keys.PIXEL_EMBEDDINGS]),
  }


def _endpoints(model, image) -> Dict[str, np.ndarray]:
  """Backbone and pixel-decoder endpoints (the same sub-layers the model calls)."""
  x = image / 127.5 - 1.0
  endpoints = model.backbone(x, training=False)
  out = {f"encoder/{k}": _np(v) for k, v in endpoints.items()
         if k.startswith(("stage", "res"))}
  features = model.pixel_decoder(endpoints, training=False)
  for i, feature in enumerate(features[:-1]):
    out[f"pixel_decoder/decoder_stage{i + 1}"] = _np(feature)
  out["pixel_decoder/decoder_output"] = _np(features[-1])
  return out


@dataclasses.dataclass
class Row:
  """One compared output."""
  name: str
  max_abs: float = 0.0
  relative: float = 0.0
  differing: int = 0        # argmax / panoptic entries that differ
  excused: int = 0          # of those, flips at a near tie of the reference
  ok: bool = True
  note: str = ""

  def line(self) -> str:
    status = "ok  " if self.ok else "FAIL"
    if self.name.endswith(("cluster_assignment", "panoptic_pred")):
      detail = f"{self.differing} differ ({self.excused} at near ties)"
    else:
      detail = f"max abs {self.max_abs:.3g}, relative {self.relative:.3g}"
    return f"{status} {self.name}: {detail}{('; ' + self.note) if self.note else ''}"


def _margins(logits: np.ndarray) -> np.ndarray:
  top2 = np.sort(logits.astype(np.float64), axis=-1)[..., -2:]
  scale = np.maximum(np.abs(top2).max(axis=-1), 1e-12)
  return (top2[..., 1] - top2[..., 0]) / scale


def compare(ours: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
            names: Optional[List[str]] = None) -> List[Row]:
  """Rows for every name present in both (or `names`), reference-first order."""
  names = names or [k for k in reference if k in ours]
  rows = []
  for name in names:
    ref, got = np.asarray(reference[name]), np.asarray(ours[name])
    row = Row(name)
    if ref.shape != got.shape:
      row.ok, row.note = False, f"shape {list(got.shape)} vs reference {list(ref.shape)}"
    elif name.endswith("cluster_assignment"):
      differ = ref != got
      row.differing = int(differ.sum())
      logits_key = name.replace("cluster_assignment", "pixel_space_mask_logits")
      if row.differing and logits_key in reference:
        near = _margins(np.asarray(reference[logits_key])) < NEAR_TIE
        row.excused = int((differ & near).sum())
      row.ok = row.differing == row.excused
    elif name in PANOPTIC_KEYS or ref.dtype.kind in "iu":
      row.differing = int((ref != got).sum())
      row.ok = row.differing == 0
    else:
      err = np.abs(got.astype(np.float64) - ref)
      row.max_abs = float(err.max()) if err.size else 0.0
      scale = float(np.abs(ref).max()) if ref.size else 0.0
      row.relative = row.max_abs / max(scale, 1e-12)
      row.ok = row.relative <= RELATIVE_TOLERANCE
    rows.append(row)
  return rows


def near_tie_flip_happened(rows: List[Row]) -> bool:
  """Whether a k-means assignment flipped at a near tie (later outputs then differ for
  a legitimate reason)."""
  return any(r.excused for r in rows)
