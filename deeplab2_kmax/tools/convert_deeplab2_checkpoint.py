r"""Converts a deeplab2 kMaX-DeepLab checkpoint into a checkpoint of this project.

  python -m deeplab2_kmax.tools.convert_deeplab2_checkpoint \
      --deeplab2_checkpoint=kmax_meta_r50_os32_coco.tar.gz \
      --gin_file=configs/coco/kmax_r50.gin --num_classes=133 \
      --output_dir=checkpoints/kmax_r50_coco [--reference=FILE.npz] [--dump_outputs=FILE.npz]

`--deeplab2_checkpoint` is a checkpoint prefix (`.../ckpt-150000`), a folder holding one,
or the downloaded `.tar.gz` as is. `--gin_file` is our config of the same model (see
docs/MODEL_ZOO.md); the classes come from `--dataset_info` (our converter's
dataset_info.json) or, for COCO (133), Cityscapes (19) and ADE20K (150), from
`--num_classes`. Every deeplab2 model variable is mapped into our model (class channels
reordered to our train ids, see `conversion.label_space`); optimizer slots, step counters
and the object graph are skipped and counted. Anything that does not fit (another
backbone or config, another class count, a truncated or foreign checkpoint) stops the
conversion with one line naming it, before anything is written.

Writes `output_dir/ckpt-<deeplab2 step>` (+ the `checkpoint` state file), which every
`--checkpoint` flag of the project reads (evaluate, export, predict, visualize_clusters)
and `trainer/train.py --init_checkpoint` starts from.

`--reference=FILE.npz` (deeplab2's outputs for the array `input` of that file, under
deeplab2's output names) restores the written checkpoint through the project's normal
restore path, runs the model (float32, training=False) and the config's mask-wise merge
on `input`, prints per output the max absolute and relative error (or, for k-means
assignments and panoptic maps, the entries that differ) and exits 1 beyond tolerance.
`--dump_outputs=FILE.npz` writes our outputs under deeplab2's names and layouts
(`conversion.parity`), for the reference's input or, without one, for
`np.random.default_rng(0).uniform(0, 255, (1, S, S, 3))` with S = `--input_size`.
"""

import json
import os
import sys
import time

from absl import flags
import numpy as np

from data import ade20k_categories
from data import build_cityscapes_tfrecord
from deeplab2_kmax.app import checkpoints
from deeplab2_kmax.app import configs
from deeplab2_kmax.conversion import convert
from deeplab2_kmax.conversion import deeplab2_checkpoint
from deeplab2_kmax.conversion import label_space as label_space_lib
from deeplab2_kmax.conversion import parity
from deeplab2_kmax.core import cli
from deeplab2_kmax.core.dataset_info import DatasetInfo
from deeplab2_kmax import model as model_lib
from deeplab2_kmax import post_processing

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("deeplab2_checkpoint", "", "deeplab2 checkpoint: prefix, folder "
                      "or .tar.gz")
  flags.DEFINE_multi_string("gin_file", [], "our config of the same model (repeatable)")
  flags.DEFINE_multi_string("gin_bindings", [], "extra gin bindings")
  flags.DEFINE_integer("num_classes", 0, "133 (COCO), 19 (Cityscapes) or 150 (ADE20K)")
  flags.DEFINE_string("dataset_info", "", "dataset_info.json (instead of --num_classes)")
  flags.DEFINE_string("output_dir", "", "where the converted checkpoint is written")
  flags.DEFINE_bool("overwrite", False, "replace checkpoints already in --output_dir")
  flags.DEFINE_string("reference", "", "deeplab2 outputs (.npz) to compare with")
  flags.DEFINE_string("dump_outputs", "", "write our outputs under deeplab2's names")
  flags.DEFINE_integer("input_size", 129, "input size of --dump_outputs without "
                       "--reference")


def standard_dataset_info(num_classes: int) -> DatasetInfo:
  """Our label constants of the datasets deeplab2 released models for."""
  if num_classes == 19:
    return build_cityscapes_tfrecord.cityscapes_info()
  if num_classes == 150:
    return ade20k_categories.ade20k_info()
  if num_classes == 133:  # COCO panoptic: 80 things then 53 stuff in category-id order
    cats = [{"id": t + 1, "name": f"class_{t}", "isthing": int(t < 80)} for t in range(133)]
    return DatasetInfo.from_coco_categories("coco_panoptic", cats, label_divisor=256,
                                            ignore_label=255)
  raise ValueError(f"--num_classes={num_classes}: deeplab2's models have 133 (COCO), 19 "
                   "(Cityscapes) or 150 (ADE20K) classes; for another dataset pass "
                   "--dataset_info, and fine-tune with train.py --init_checkpoint")


def dataset_info_from_flags() -> DatasetInfo:
  if FLAGS.dataset_info:
    return DatasetInfo.load(FLAGS.dataset_info)
  if not FLAGS.num_classes:
    raise ValueError("--num_classes or --dataset_info: one is required")
  return standard_dataset_info(FLAGS.num_classes)


def parse_config(gin_files, gin_bindings):
  if not gin_files:
    raise cli.UserError("--gin_file: required (our config of the checkpoint's model, see "
                        "docs/MODEL_ZOO.md)")
  configs.parse_config(gin_files, gin_bindings, skip_unknown=True)


def build(info: DatasetInfo):
  model = model_lib.build_model(num_classes=info.num_classes)
  convert.build_variables(model)
  return model


def mergers(info: DatasetInfo, mask_stride: int):
  """The config's mask-wise merge, and the same without area limits, for mask logits
  of stride `mask_stride` (the model's output_stride)."""
  merger = post_processing.MaskWiseMerger(thing_train_ids=info.thing_train_ids,
                                          label_divisor=info.label_divisor,
                                          ignore_label=info.ignore_label,
                                          mask_stride=mask_stride)
  config = dict(merger.get_config(), thing_area_limit=0, stuff_area_limit=0)
  return merger, post_processing.MaskWiseMerger(**config)


def run_outputs(prefix: str, info: DatasetInfo, space, image) -> dict:
  """deeplab2-named outputs of the written checkpoint, restored as every CLI does."""
  model = model_lib.build_model(num_classes=info.num_classes)
  checkpoints.restore_model(model, prefix)
  merger, no_limit = mergers(info, model.output_stride)
  return parity.deeplab2_outputs(model, merger, space, image, info.label_divisor,
                                 info.ignore_label, no_limit)


def load_reference(path: str) -> dict:
  try:
    with np.load(path) as data:
      reference = {k: data[k] for k in data.files}
  except (OSError, ValueError) as e:
    raise ValueError(f"--reference={path}: not a readable .npz file ({e})") from e
  if "input" not in reference:
    raise ValueError(f"--reference={path}: has no array named 'input'")
  return reference


def convert_checkpoint(info: DatasetInfo) -> dict:
  """Converts and writes; returns a summary (also written as conversion.json)."""
  start = time.time()
  space = label_space_lib.for_dataset(info.name, info.num_classes, info.thing_train_ids)
  with deeplab2_checkpoint.open_checkpoint(FLAGS.deeplab2_checkpoint) as checkpoint:
    model = build(info)
    plan = convert.convert_into(model, checkpoint, space)
    step = checkpoint.global_step or 0
    skipped = {}
    for reason in checkpoint.skipped.values():
      skipped[reason] = skipped.get(reason, 0) + 1
    summary = {
        "source": FLAGS.deeplab2_checkpoint, "gin_file": list(FLAGS.gin_file),
        "num_classes": info.num_classes, "label_space": space.name,
        "encoder": convert.encoder_name(model), "deeplab2_step": step,
        "deeplab2_variables": len(checkpoint.shapes),
        "model_variables": len(plan.restored_paths), "skipped": skipped,
    }
  if not FLAGS.output_dir:
    raise ValueError("--output_dir: required")
  summary["checkpoint"] = convert.write_checkpoint(model, FLAGS.output_dir, step,
                                                   FLAGS.overwrite)
  summary["seconds"] = round(time.time() - start, 1)
  with open(os.path.join(FLAGS.output_dir, "conversion.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return summary


def main(argv):
  del argv
  try:
    info = dataset_info_from_flags()
    parse_config(FLAGS.gin_file, FLAGS.gin_bindings)
    summary = convert_checkpoint(info)
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(summary["skipped"].items()))
    print(f"converted {summary['deeplab2_variables']} deeplab2 variables "
          f"({summary['encoder']} encoder, {summary['label_space']} classes) into "
          f"{summary['model_variables']} model variables in {summary['seconds']} s; "
          f"skipped: {skipped or 'nothing'}")
    print(f"wrote {summary['checkpoint']}")
    if not (FLAGS.reference or FLAGS.dump_outputs):
      return 0
    reference = load_reference(FLAGS.reference) if FLAGS.reference else None
    image = (reference["input"] if reference is not None else
             np.random.default_rng(0).uniform(
                 0, 255, (1, FLAGS.input_size, FLAGS.input_size, 3)).astype(np.float32))
    space = label_space_lib.for_dataset(info.name, info.num_classes, info.thing_train_ids)
    ours = run_outputs(summary["checkpoint"], info, space, image)
    if FLAGS.dump_outputs:
      np.savez_compressed(FLAGS.dump_outputs, input=image, **ours)
      print(f"wrote {FLAGS.dump_outputs} ({len(ours) + 1} arrays)")
    if reference is None:
      return 0
    rows = parity.compare(ours, reference)
    for row in rows:
      print(row.line())
    failed = [r.name for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)} of {len(rows)} outputs within tolerance "
          f"(relative {parity.RELATIVE_TOLERANCE:g}; assignments may flip only at a "
          f"reference top-2 margin < {parity.NEAR_TIE:g})")
    if failed:
      print(f"error: --reference={FLAGS.reference}: {len(failed)} output(s) beyond "
            f"tolerance: {', '.join(failed[:5])}", file=sys.stderr)
      sys.exit(1)
    return 0
  except (ValueError, deeplab2_checkpoint.CheckpointError) as e:
    raise cli.UserError(str(e)) from e



def entry():
  """Console-script entry point."""
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  entry()
