r"""Panoptic predictions for a folder of images, from a SavedModel or a checkpoint.

  python -m deeplab2_kmax.predict --saved_model=export --images='photos/*.jpg' \
      --output_dir=predictions
  python -m deeplab2_kmax.predict --gin_file=CONFIG.gin --checkpoint=model_dir/ckpt-300 \
      --dataset_info=tfrecords/dataset_info.json --images='photos/*.jpg' --output_dir=out

writes, for every image `<stem>.<ext>`:
* `output_dir/panoptic/<stem>.png` — COCO panoptic PNG (segment id = R + 256 G + 256² B);
* `output_dir/overlay/<stem>.png` — the image blended with segment colours, contours and
  the category names of large segments;
and one `output_dir/panoptic.json` in COCO panoptic format (`annotations` with
`file_name` and `segments_info` — original category ids, `score` per segment — plus
`images` and `categories`). `--saved_model` accepts a version folder or the TF Serving
base folder (highest version). The SavedModel is fed the file's bytes through
`serving_default`, exactly what TF Serving receives. `--model=FILE` runs an ONNX /
LiteRT / OpenVINO artifact of `export --format=...` (model.onnx, model.tflite,
model.xml, or its folder) in its own runtime (`app/runners.py`).
"""
import glob
import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from absl import flags

from deeplab2_kmax.app import configs
from deeplab2_kmax.app import visualization
from deeplab2_kmax.app.runners import checkpoint_runner, file_runner, saved_model_runner
from deeplab2_kmax.core import cli
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core.geometry import parse_input_size
from evaluation.writers import CocoPanopticWriter


def list_images(pattern: str) -> List[str]:
  """Sorted files matching `--images`; stems must be unique (they name the outputs)."""
  if not pattern:
    raise UserError("--images: required (a glob such as 'photos/*.jpg')")
  files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
  if not files:
    raise UserError(f"--images={pattern}: no file matches")
  seen: Dict[str, str] = {}
  for f in files:
    stem = os.path.splitext(os.path.basename(f))[0]
    if stem in seen:
      raise UserError(f"--images={pattern}: {seen[stem]} and {f} would both be written "
                      f"as {stem}.png")
    seen[stem] = f
  return files


def segment_scores(prediction) -> Dict[int, float]:
  """Internal panoptic value -> score of each predicted segment."""
  n = int(prediction["num_segments"])
  return {int(v): float(s) for v, s in zip(prediction["segment_ids"][:n],
                                           prediction["segment_scores"][:n])}


def predict_files(info, run: Callable[[bytes, str], Tuple[np.ndarray, Dict]],
                  files: Sequence[str], output_dir: str,
                  min_label_fraction: float = 0.01, overlay_scale: int = 1) -> str:
  """Runs `run` on every file and writes the PNGs, overlays and the JSON (its path)."""
  if not output_dir:
    raise UserError("--output_dir: required flag not set")
  writer = CocoPanopticWriter(
      output_dir, info.coco_categories(), info.label_divisor, info.ignore_label,
      info.thing_train_ids, info.category_ids,
      name="panoptic")
  overlay_dir = os.path.join(output_dir, "overlay")
  os.makedirs(overlay_dir, exist_ok=True)
  names = dict(enumerate(info.names))
  colors = dict(enumerate(info.colors))
  for path in tqdm(files, desc="predict", unit="image"):
    with open(path, "rb") as f:
      data = f.read()
    image, pred = run(data, path)
    stem = os.path.splitext(os.path.basename(path))[0]
    panoptic = pred["panoptic"]
    if panoptic.shape != image.shape[:2]:
      raise RuntimeError(f"{path}: prediction {panoptic.shape} != image {image.shape[:2]}")
    writer.add(stem, panoptic, file_name=stem + ".png", scores=segment_scores(pred))
    overlay = visualization.overlay_panoptic(image, panoptic, info.label_divisor,
                                             info.ignore_label, names, colors,
                                             min_label_fraction=min_label_fraction,
                                             scale=overlay_scale)
    tf.io.write_file(os.path.join(overlay_dir, stem + ".png"), tf.io.encode_png(overlay))
  return writer.close()


def run(f) -> str:
  """The CLI on parsed flags `f` (an absl FlagValues with `define_flags` applied)."""
  if sum(bool(v) for v in (f.saved_model, f.checkpoint, f.model)) > 1:
    raise UserError("--saved_model, --model, --checkpoint: pass one of them, not several")
  if f.model:  # an ONNX / LiteRT / OpenVINO artifact
    if f.input_size:
      raise UserError("--input_size: fixed at export time; drop it with --model")
    info, run = file_runner(f.model)
  elif f.saved_model:
    if f.input_size:
      raise UserError("--input_size: fixed at export time; drop it with --saved_model")
    info, run = saved_model_runner(f.saved_model)
  elif f.checkpoint:
    info, run = checkpoint_runner(f.gin_file, f.gin_bindings, f.checkpoint, f.dataset_info,
                                  parse_input_size(f.input_size))
  else:
    raise UserError("--saved_model / --model / --checkpoint: pass --saved_model=DIR, "
                    "--model=FILE or --gin_file, --checkpoint and --dataset_info")
  json_path = predict_files(info, run, list_images(f.images), f.output_dir,
                            f.min_label_fraction, f.overlay_scale)
  print(f"wrote {json_path}, {f.output_dir}/panoptic/*.png and {f.output_dir}/overlay/*.png")
  return json_path


def main(argv):
  del argv
  run(flags.FLAGS)


def define_flags(flag_values=None):
  """Defines this CLI's flags on `flag_values` (default: absl's global FLAGS)."""
  on = {"flag_values": flag_values if flag_values is not None else flags.FLAGS}
  flags.DEFINE_string("saved_model", "", "exported SavedModel (version or base folder)", **on)
  flags.DEFINE_string("model", "", "an ONNX / LiteRT / OpenVINO artifact of export "
                      "--format (model.onnx / model.tflite / model.xml or its folder)", **on)
  configs.define_model_flags(gin_help="gin config(s), with --checkpoint",
                             dataset_info_help="dataset_info.json, with --checkpoint", **on)
  flags.DEFINE_string("input_size", "", "optional H,W (32k+1), with --checkpoint", **on)
  flags.DEFINE_string("images", "", "glob of input images, e.g. 'photos/*.jpg'", **on)
  flags.DEFINE_string("output_dir", "", "where panoptic/, overlay/ and panoptic.json go",
                      **on)
  flags.DEFINE_float("min_label_fraction", 0.01,
                     "segments covering at least this fraction of the image get a name", **on)
  flags.DEFINE_integer("overlay_scale", 1, "upscale overlays by this integer factor "
                       "(for small images)", **on)



def entry():
  """`python -m deeplab2_kmax.predict` and the `kmax-predict` command."""
  define_flags()
  cli.run(main)
