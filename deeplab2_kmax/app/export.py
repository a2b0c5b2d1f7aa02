r"""Exports a trained kMaX-DeepLab checkpoint as a TF Serving SavedModel.

  python -m deeplab2_kmax.export --gin_file=CONFIG.gin --checkpoint=model_dir/ckpt-300 \
      --dataset_info=tfrecords/dataset_info.json --output_dir=export [--input_size=H,W] \
      [--verify_tfrecord='tfrecords/val-*.tfrecord']

writes `output_dir/<version>/` (version = `--version`, default the next free number,
starting at 1, as TF Serving expects) with two signatures:

* `serving_default`: `image_bytes` tf.string [batch] (JPEG / PNG / BMP / GIF, any size);
* `serve_images`: `images` uint8 [batch, H, W, 3].

Outputs: `panoptic_map`, `semantic_map`, `instance_map` int32 [batch, H, W]
(semantic * label_divisor + instance, at each image's original size; in a
`serving_default` batch of different sizes, maps are padded bottom/right with void up to
the largest image and `image_size` [batch, 2] tells each image's height and width),
`segment_ids` / `segment_classes` int32 and `segment_scores` float32 [batch, N] (padded
per image, the first `num_segments` entries are real), `num_segments` int32 [batch].
Classes are train ids; `category_ids[train_id]` gives the dataset's category id.

Inputs are checked before any work, each refusal (InvalidArgumentError) naming what is
wrong: `image_bytes[i]` that does not decode, an image above `--max_image_pixels` (read
from its header, before decoding; default 4096 x 4096, 0: no limit), `images` that are
not uint8 [batch, H, W, 3].

Label metadata travels with the model: `assets/dataset_info.json`, and the attributes
`label_divisor`, `ignore_label`, `num_classes`, `category_ids`, `category_names`,
`category_isthing`, `category_colors`, `input_size`, `max_image_pixels` (variables of the
loaded object).
Every signature runs `app.predictor.PanopticPredictor.predict_image`, the function the
Python path calls, so exported predictions equal the checkpoint's pixel for pixel;
`--verify_tfrecord` checks this on a split after exporting (and fails otherwise).
Without `--input_size` the config's eval input size (`eval_input_size.size`) is used,
so the exported model sees the evaluation's input; a config without one pads each image
to its next 32k+1 size.

`--format=saved_model,onnx,litert,openvino` (comma list, default saved_model) also
writes ONNX / LiteRT / OpenVINO artifacts with the mask-wise merging inside
(`export_formats/`), verified in their own runtimes with `--verify_tfrecord`; one JSON
line per artifact: {"format", "path", "bytes", "verified_images", ...}.
"""
import json

from absl import flags

from deeplab2_kmax.app import configs
from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app import saved_model
from deeplab2_kmax.core import cli, geometry
from deeplab2_kmax.core.cli import UserError
from deeplab2_kmax.core.dataset_info import DatasetInfo
from deeplab2_kmax.app.export_formats import artifacts, export_command


def run(f) -> str:
  """The CLI on parsed flags `f` (an absl FlagValues with `define_flags` applied).
  Returns the SavedModel's path (else the first artifact's)."""
  if not f.dataset_info:
    raise UserError("--dataset_info: required (the converter's dataset_info.json)")
  formats = artifacts.parse_formats(f.format)
  others = [fmt for fmt in formats if fmt != artifacts.SAVED_MODEL]
  info = DatasetInfo.load(f.dataset_info)
  predictor = predictor_lib.load_predictor(f.gin_file, f.gin_bindings, f.checkpoint,
                                       f.dataset_info, geometry.parse_input_size(f.input_size),
                                       f.max_image_pixels)
  path = None
  if artifacts.SAVED_MODEL in formats:
    path = saved_model.export_saved_model(predictor, info, f.output_dir, f.version)
    print(f"exported SavedModel to {path}")
    result = None
    if f.verify_tfrecord:
      result = saved_model.verify_export(path, predictor, f.verify_tfrecord, f.verify_max_examples)
      print(f"verified: {result['images']} images, {result['pixels']} pixels, every "
            "output equal to the checkpoint's Python path")
    print(json.dumps(export_command.record(artifacts.SAVED_MODEL, path, result)))
  if others:  # ONNX / LiteRT / OpenVINO: export_formats/export_command.py
    records = export_command.export_formats(
        others, predictor, info, f.output_dir, predictor.input_size, f.version,
        f.verify_tfrecord, f.verify_max_examples)
    path = path or records[0]["path"]
  return path


def main(argv):
  del argv
  run(flags.FLAGS)


def define_flags(flag_values=None):
  """Defines this CLI's flags on `flag_values` (default: absl's global FLAGS)."""
  on = {"flag_values": flag_values if flag_values is not None else flags.FLAGS}
  configs.define_model_flags(**on)
  flags.DEFINE_string("output_dir", "", "TF Serving base folder; writes <output_dir>/<version>",
                      **on)
  flags.DEFINE_string("input_size", "", "optional H,W (32k+1): resize to fit + pad to this; "
                      "default: the config's eval_input_size.size, else pad each image to its "
                      "next 32k+1 size", **on)
  flags.DEFINE_string("verify_tfrecord", "", "optional TFRecord glob (e.g. the eval split): "
                      "check the SavedModel against the Python path on it", **on)
  flags.DEFINE_integer("verify_max_examples", 0, "verify at most this many images (0: all)",
                       **on)
  flags.DEFINE_integer("version", None, "version folder number (default: next free, from 1)",
                       **on)
  flags.DEFINE_string("format", "saved_model", "comma list of saved_model, onnx, litert, "
                      "openvino; the last three (with the merge inside) go to "
                      "<output_dir>/<format>/<version>/ at --input_size (default: the "
                      "config's eval size)", **on)
  flags.DEFINE_integer("max_image_pixels", predictor_lib.DEFAULT_MAX_IMAGE_PIXELS,
                       "refuse images with more pixels than this (0: no limit)", **on)


def entry():
  """`python -m deeplab2_kmax.export` and the `kmax-export` command."""
  define_flags()
  cli.run(main)
