"""Runs an exported artifact on one image of any size, as the Python path does.

`app.predictor.PanopticPredictor.predict_image` pads an image up to the export size (or
shrinks a larger one to fit, then pads) and crops the maps back. Artifacts take
images at the export size plus each image's `image_size`, so here the host pads
(any value: the artifact replaces padding by the mean pixel) and crops. A larger
image is shrunk on the host by the evaluation pipeline's own resize
(`app.predictor.prepare_image`) and rounded to uint8, the artifacts' input type; only
then does the input differ slightly from the Python path's (float) one.
"""

from typing import Dict

import numpy as np
import tensorflow as tf

from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app.export_formats.signature import OUTPUTS

# artifact output name -> predict_image key
KEYS = {name: key for key, name in OUTPUTS.items()}


class ArtifactPredictor:
  """`predict_image(uint8 [h, w, 3]) -> {panoptic, semantic, instance: int32 [h, w],
  segment_ids, segment_classes: [N], segment_scores: [N], num_segments: []}` (numpy)
  through `runner` (a format's Runner: its `metadata` gives the export size)."""

  def __init__(self, runner):
    self.runner = runner
    self.input_size = tuple(runner.metadata["input_size"])
    self.info = runner.metadata["dataset_info"]

  def prepare(self, image: np.ndarray):
    """-> (uint8 [H, W, 3] padded with zeros, (h, w) of the image inside, shrunk?)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"image must be [height, width, 3], got {image.shape}")
    height, width = self.input_size
    if image.shape[0] <= height and image.shape[1] <= width:
      inner, pixels, shrunk = image.shape[:2], image, False
    else:
      x, size = predictor_lib.prepare_image(tf.constant(image, tf.uint8), self.input_size)
      inner = tuple(int(v) for v in size.numpy())
      pixels = np.clip(np.round(x[0, :inner[0], :inner[1]].numpy()), 0, 255)
      shrunk = True
    padded = np.zeros((height, width, 3), np.uint8)
    padded[:inner[0], :inner[1]] = pixels
    return padded, inner, shrunk

  def predict_image(self, image: np.ndarray) -> Dict[str, np.ndarray]:
    padded, inner, shrunk = self.prepare(image)
    out = self.runner(padded[None], np.array([inner], np.int32))
    result = {}
    for name, key in KEYS.items():
      value = np.asarray(out[name])[0]
      if key in predictor_lib.MAP_KEYS:
        value = value[:inner[0], :inner[1]]
        if shrunk:
          value = tf.image.resize(value[..., None], np.shape(image)[:2],
                                  method="nearest")[..., 0].numpy()
      result[key] = value
    return result
