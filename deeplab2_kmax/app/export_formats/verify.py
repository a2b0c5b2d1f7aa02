"""Agreement of an artifact with the Python path (= the SavedModel) on a TFRecord split.

Agreement of two panoptic maps: the fraction of pixels that lie in matched segments
of the same class. Segments are matched one to one by mutual largest overlap
(instance numbers may differ when two masks swap places in the score order without
changing any segment); void counts as a class. 1.0 when the maps are equal.
"""

from typing import Dict

import numpy as np
from tqdm import tqdm

from data import tfrecord_format

THRESHOLD = 0.995


def panoptic_agreement(got: np.ndarray, want: np.ndarray, label_divisor: int) -> float:
  """Fraction of pixels in mutually best-overlapping segments with the same class."""
  got = np.asarray(got, np.int64).ravel()
  want = np.asarray(want, np.int64).ravel()
  if got.shape != want.shape:
    raise ValueError(f"maps differ in size: {got.shape} vs {want.shape}")
  if got.size == 0:
    return 1.0
  pairs, counts = np.unique(got << 32 | want, return_counts=True)
  best_of_got, best_of_want = {}, {}
  for i in np.argsort(-counts, kind="stable"):  # largest overlaps first
    x, y = int(pairs[i] >> 32), int(pairs[i] & 0xFFFFFFFF)
    best_of_got.setdefault(x, y)
    best_of_want.setdefault(y, x)
  matched = np.array([best_of_got[x] == y and best_of_want[y] == x
                      and x // label_divisor == y // label_divisor
                      for x, y in (divmod(int(p), 1 << 32) for p in pairs)], bool)
  return float(counts[matched].sum() / got.size)


def verify_artifact(artifact, python_path, tfrecord_pattern: str, max_examples: int = 0,
                    threshold: float = THRESHOLD, desc: str = "verify") -> Dict:
  """`artifact` (an ArtifactPredictor) against `python_path` (a PanopticPredictor with
  the same input size) on every image of the split. Returns {"images", "pixels",
  "min_agreement", "mean_agreement", "identical_images"}; raises RuntimeError naming
  the first image whose agreement is below `threshold`."""
  if tuple(python_path.input_size or ()) != tuple(artifact.input_size):
    raise ValueError(f"the Python path's input size {python_path.input_size} differs from "
                     f"the artifact's export size {artifact.input_size}")
  dataset = tfrecord_format.read_split(tfrecord_pattern, max_examples)
  divisor = python_path.label_divisor
  agreements, pixels, identical = [], 0, 0
  for serialized in tqdm(dataset, desc=desc, unit="image"):
    example = tfrecord_format.parse_example(serialized)
    want = python_path.predict_image(example["image"])["panoptic"].numpy()
    got = artifact.predict_image(example["image"].numpy())["panoptic"]
    value = panoptic_agreement(got, want, divisor)
    if value < threshold:
      raise RuntimeError(
          f"{desc}: image {example['image_id'].numpy().decode()} agrees with the Python "
          f"path on {value:.2%} of its pixels (< {threshold:.1%})")
    agreements.append(value)
    pixels += want.size
    identical += int(np.array_equal(got, want))
  return {"images": len(agreements), "pixels": pixels,
          "min_agreement": min(agreements, default=1.0),
          "mean_agreement": float(np.mean(agreements)) if agreements else 1.0,
          "identical_images": identical}
