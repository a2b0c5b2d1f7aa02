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
model.xml, or its folder) in its own runtime (`export_formats/artifact_predictor.py`).
"""
import glob
import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from deeplab2_kmax import inference, visualization


def decode_image(data: bytes, path: str) -> np.ndarray:
  """The decoding every path uses (3 channels, first frame), naming the file on error."""
  try:
    return inference.decode_image(data).numpy()
  except tf.errors.InvalidArgumentError as e:
    raise ValueError(f"{path}: not a decodable image ({e.message.splitlines()[0]})") from e


def saved_model_runner(path: str):
  """-> (DatasetInfo from the model's assets, fn(bytes, path) -> (image, prediction))."""
  from data.dataset_info import DatasetInfo
  from deeplab2_kmax.export import OUTPUT_NAMES, resolve_saved_model

  loaded = tf.saved_model.load(resolve_saved_model(path))
  info = DatasetInfo.load(loaded.dataset_info.asset_path.numpy().decode())
  serve = loaded.signatures["serving_default"]
  internal_names = {v: k for k, v in OUTPUT_NAMES.items()}

  def run(data: bytes, file_path: str):
    image = decode_image(data, file_path)
    out = serve(image_bytes=tf.constant([data]))
    return image, {internal_names[k]: v[0].numpy() for k, v in out.items()}

  run.keepalive = loaded  # the signature needs the loaded object alive
  return info, run


def checkpoint_runner(gin_files, gin_bindings, checkpoint, dataset_info, input_size):
  """-> (DatasetInfo, fn(bytes, path) -> (image, prediction)) through the Python path."""
  from data.dataset_info import DatasetInfo
  from deeplab2_kmax.inference import load_predictor

  if not dataset_info:
    raise ValueError("--dataset_info is required with --checkpoint")
  info = DatasetInfo.load(dataset_info)
  predictor = load_predictor(gin_files, gin_bindings, checkpoint, info, input_size)

  def run(data: bytes, file_path: str):
    image = decode_image(data, file_path)
    return image, {k: v.numpy() for k, v in predictor.predict_image(image).items()}

  return info, run


def list_images(pattern: str) -> List[str]:
  """Sorted files matching `--images`; stems must be unique (they name the outputs)."""
  if not pattern:
    raise ValueError("--images is required (a glob such as 'photos/*.jpg')")
  files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
  if not files:
    raise ValueError(f"--images={pattern}: no file matches")
  seen: Dict[str, str] = {}
  for f in files:
    stem = os.path.splitext(os.path.basename(f))[0]
    if stem in seen:
      raise ValueError(f"--images={pattern}: {seen[stem]} and {f} would both be written "
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
  from evaluation.writers import CocoPanopticWriter

  if not output_dir:
    raise ValueError("--output_dir is required")
  writer = CocoPanopticWriter(
      output_dir, info.coco_categories(), info.label_divisor, info.ignore_label,
      info.thing_train_ids, [info.train_id_to_category_id[t] for t in range(info.num_classes)],
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
  from deeplab2_kmax.export import parse_input_size

  if sum(bool(v) for v in (f.saved_model, f.checkpoint, f.model)) > 1:
    raise ValueError("pass only one of --saved_model, --model or --gin_file/--checkpoint "
                     "(not both)")
  if f.model:  # an ONNX / LiteRT / OpenVINO artifact
    from deeplab2_kmax.export_formats.artifact_predictor import file_runner
    if f.input_size:
      raise ValueError("--input_size is fixed at export time; drop it with --model")
    info, run = file_runner(f.model)
  elif f.saved_model:
    if f.input_size:
      raise ValueError("--input_size is fixed at export time; drop it with --saved_model")
    info, run = saved_model_runner(f.saved_model)
  elif f.checkpoint:
    info, run = checkpoint_runner(f.gin_file, f.gin_bindings, f.checkpoint, f.dataset_info,
                                  parse_input_size(f.input_size))
  else:
    raise ValueError("pass --saved_model=DIR, --model=FILE or --gin_file, --checkpoint and "
                     "--dataset_info")
  json_path = predict_files(info, run, list_images(f.images), f.output_dir,
                            f.min_label_fraction, f.overlay_scale)
  print(f"wrote {json_path}, {f.output_dir}/panoptic/*.png and {f.output_dir}/overlay/*.png")
  return json_path


def main(argv):
  del argv
  from absl import flags
  from deeplab2_kmax.export_formats.runtimes import MissingRuntime
  try:
    run(flags.FLAGS)
  except MissingRuntime as e:  # one line saying what to install
    raise SystemExit(str(e)) from None


def define_flags(flag_values=None):
  """Defines this CLI's flags on `flag_values` (default: absl's global FLAGS)."""
  from absl import flags
  on = {"flag_values": flag_values if flag_values is not None else flags.FLAGS}
  flags.DEFINE_string("saved_model", "", "exported SavedModel (version or base folder)", **on)
  flags.DEFINE_string("model", "", "an ONNX / LiteRT / OpenVINO artifact of export "
                      "--format (model.onnx / model.tflite / model.xml or its folder)", **on)
  flags.DEFINE_multi_string("gin_file", [], "gin config(s), with --checkpoint", **on)
  flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings", **on)
  flags.DEFINE_string("checkpoint", "", "checkpoint prefix (model_dir/ckpt-300) or model_dir",
                      **on)
  flags.DEFINE_string("dataset_info", "", "dataset_info.json, with --checkpoint", **on)
  flags.DEFINE_string("input_size", "", "optional H,W (32k+1), with --checkpoint", **on)
  flags.DEFINE_string("images", "", "glob of input images, e.g. 'photos/*.jpg'", **on)
  flags.DEFINE_string("output_dir", "", "where panoptic/, overlay/ and panoptic.json go",
                      **on)
  flags.DEFINE_float("min_label_fraction", 0.01,
                     "segments covering at least this fraction of the image get a name", **on)
  flags.DEFINE_integer("overlay_scale", 1, "upscale overlays by this integer factor "
                       "(for small images)", **on)


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main)
