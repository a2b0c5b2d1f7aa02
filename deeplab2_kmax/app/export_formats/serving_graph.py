"""The graph every non-SavedModel artifact holds: uint8 images at the export size ->
model -> mask-wise merging -> the SavedModel's outputs, with static shapes.

Inputs (batch dimension dynamic):
  images      uint8 [batch, H, W, 3]   (H, W) = the export size (32k + 1)
  image_size  int32 [batch, 2]         height, width of each image inside (top-left);
                                       [H, W] for images of the export size
Outputs (the SavedModel's `serve_images` names and encoding, at the export size):
  panoptic_map, semantic_map, instance_map  int32 [batch, H, W]  (void / ignore / 0
                                            outside image_size)
  segment_ids, segment_classes int32, segment_scores float32  [batch, N]
  num_segments int32 [batch]

Pixels outside `image_size` become the mean pixel (127.5), as the Python path pads
(`app.predictor.prepare_image`), and the merge ignores them as `MaskWiseMerger` crops
them: an image smaller than the export size, padded anywhere bottom/right by the
caller, gets the Python path's prediction. The model is traced under
`portable_ops.portable_graph()` and the merge is `DenseMaskWiseMerger`.
"""

from typing import Dict, Tuple

import tensorflow as tf

from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app.export_formats.dense_merger import DenseMaskWiseMerger
from deeplab2_kmax.app.export_formats.signature import INPUT_NAMES, OUTPUTS
from deeplab2_kmax.core import output_keys
from deeplab2_kmax.kernels import portable_ops

OUTPUT_DTYPES = {"segment_scores": tf.float32}  # every other output is int32


class PortableServing(tf.Module):
  """Holds the model and the dense merger; `function` is the exported tf.function.

  Args:
    predictor: the Python path (`app.predictor.PanopticPredictor`): its model and its
      merger's settings are exported.
    input_size: (H, W), both 32k + 1: the export size.
  """

  def __init__(self, predictor: predictor_lib.PanopticPredictor, input_size: Tuple[int, int]):
    super().__init__(name="kmax_deeplab_portable")
    self.model = predictor.model
    self.merger = DenseMaskWiseMerger(predictor.merger)
    self.input_size = predictor_lib.check_input_size(input_size)
    self.ignore_label = predictor.ignore_label
    self.label_divisor = predictor.label_divisor
    height, width = self.input_size
    self.function = tf.function(self.serve, input_signature=[
        tf.TensorSpec([None, height, width, 3], tf.uint8, name=INPUT_NAMES[0]),
        tf.TensorSpec([None, 2], tf.int32, name=INPUT_NAMES[1])])

  def serve(self, images, image_size) -> Dict[str, tf.Tensor]:
    height, width = self.input_size
    image_size = tf.clip_by_value(tf.cast(image_size, tf.int32), 1,
                                  tf.constant([[height, width]], tf.int32))
    rows = tf.range(height)[None, :, None] < image_size[:, 0, None, None]
    cols = tf.range(width)[None, None, :] < image_size[:, 1, None, None]
    inside = tf.logical_and(rows, cols)[..., None]
    x = tf.where(inside, tf.cast(images, tf.float32), predictor_lib.PAD_VALUE)
    with portable_ops.portable_graph():
      outputs = self.model(x, training=False)
    grid = outputs[output_keys.MASK_LOGITS].shape[1]
    stride = (height - 1) // max(grid - 1, 1)
    if stride != self.merger.stride:
      raise ValueError(f"the model's mask logits have stride {stride} at {height}x{width}, "
                       f"the merger's mask_stride is {self.merger.stride}")
    logits = {key: outputs[key] for key in (output_keys.CLASS_LOGITS, output_keys.MASK_LOGITS)}
    merged = self.merger(logits, image_size)
    return {name: tf.cast(merged[key], OUTPUT_DTYPES.get(key, tf.int32))
            for key, name in OUTPUTS.items()}
