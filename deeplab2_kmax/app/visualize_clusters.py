r"""The paper's appendix figure: how pixels group into clusters, layer after layer.

  python -m deeplab2_kmax.visualize_clusters --gin_file=CONFIG.gin \
      --checkpoint=model_dir/ckpt-300 --dataset_info=tfrecords/dataset_info.json \
      --image=photo.jpg --output=clusters.png

draws, in one figure, the input, the pixel-cluster assignment (argmax over the N
cluster centres) after each kMaX decoder layer — pixels of the same cluster share a
colour, and a cluster keeps its colour across layers — and the final panoptic
prediction (overlay). The assignment maps live on the decoder's stride-32/16/8 grids;
only the grid points covering the image (not the padding) are shown.
`--dataset_info` defaults to `dataset_info.json` in the checkpoint's folder.
"""
import os
from typing import List, Tuple

import numpy as np
import tensorflow as tf

from absl import flags

from deeplab2_kmax.app import configs
from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app import visualization
from deeplab2_kmax.app.runners import decode_image
from deeplab2_kmax.core import cli
from deeplab2_kmax.core import output_keys
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core.dataset_info import DatasetInfo
from deeplab2_kmax.core.geometry import parse_input_size


def cluster_maps(predictor: predictor_lib.PanopticPredictor, image: np.ndarray
                 ) -> Tuple[List[np.ndarray], List[int], int]:
  """-> (per decoder layer the int [h_l, w_l] assignment map cropped to the image,
  the layer's stride, N clusters)."""
  outputs, inner, padded = predictor.run_model(image)
  assignments = outputs.get(output_keys.CLUSTER_ASSIGNMENTS)
  if not assignments:
    raise ValueError("the model returns no 'cluster_assignments' (its decoder has no "
                     "k-means layers, e.g. interaction='cross_attention')")
  maps, strides = [], []
  for assignment in assignments:
    stride = predictor_lib.mask_stride(padded, assignment[..., tf.newaxis])
    grid = predictor_lib.covering_grid(inner, stride)
    maps.append(np.asarray(assignment[0, :grid[0], :grid[1]]))
    strides.append(int(stride[0]))
  return maps, strides, int(outputs[output_keys.CLASS_LOGITS].shape[1])


def draw(predictor: predictor_lib.PanopticPredictor, info, image: np.ndarray,
         output_path: str, min_label_fraction: float = 0.01):
  """Writes the figure for one uint8 [H, W, 3] image to `output_path` (PNG)."""
  maps, strides, num_clusters = cluster_maps(predictor, image)
  pred = predictor.predict_image(image)
  overlay = visualization.overlay_panoptic(
      image, pred["panoptic"].numpy(), info.label_divisor, info.ignore_label,
      dict(enumerate(info.names)), dict(enumerate(info.colors)),
      min_label_fraction=min_label_fraction,
      scale=max(1, round(300 / max(image.shape[:2]))))  # small images: legible names
  titles = [f"decoder layer {i + 1} (stride {s})" for i, s in enumerate(strides)]
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  visualization.cluster_figure(image, maps, overlay, num_clusters, titles,
                               output_path=output_path)


def default_dataset_info(checkpoint: str) -> str:
  """dataset_info.json beside the checkpoint (in model_dir), if any."""
  folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
  path = os.path.join(folder, "dataset_info.json")
  if not os.path.exists(path):
    raise UserError(f"--dataset_info: required ({path} does not exist)")
  return path


def run(f) -> str:
  """The CLI on parsed flags `f` (an absl FlagValues with `define_flags` applied)."""
  if not f.image or not os.path.isfile(f.image):
    raise UserError(f"--image={f.image}: no such file")
  if not f.output:
    raise UserError("--output: required (a .png path)")
  info_path = f.dataset_info or default_dataset_info(f.checkpoint)
  predictor = predictor_lib.load_predictor(f.gin_file, f.gin_bindings, f.checkpoint, info_path,
                                       parse_input_size(f.input_size))
  info = DatasetInfo.load(info_path)
  with open(f.image, "rb") as fh:
    image = decode_image(fh.read(), f.image)
  draw(predictor, info, image, f.output, f.min_label_fraction)
  print(f"wrote {f.output}")
  return f.output


def main(argv):
  del argv
  run(flags.FLAGS)


def define_flags(flag_values=None):
  """Defines this CLI's flags on `flag_values` (default: absl's global FLAGS)."""
  on = {"flag_values": flag_values if flag_values is not None else flags.FLAGS}
  configs.define_model_flags(
      dataset_info_help="dataset_info.json (default: beside the checkpoint)", **on)
  flags.DEFINE_string("input_size", "", "optional H,W (32k+1), as for export", **on)
  flags.DEFINE_string("image", "", "input image (JPEG/PNG)", **on)
  flags.DEFINE_string("output", "", "output figure (.png)", **on)
  flags.DEFINE_float("min_label_fraction", 0.01,
                     "segments covering at least this fraction of the image get a name", **on)



def entry():
  """`python -m deeplab2_kmax.visualize_clusters` and the `kmax-visualize-clusters`
  command."""
  define_flags()
  cli.run(main)
