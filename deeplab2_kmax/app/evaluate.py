r"""Evaluates a checkpoint on a TFRecord split: PQ, mIoU, instance AP, COCO-panoptic files.

  python evaluation/evaluate.py --gin_file=configs/coco/kmax_r50.gin \
      --checkpoint=MODEL_DIR/ckpt-150000 --output_dir=OUT \
      --eval_tfrecord='DATA/val-*.tfrecord' --dataset_info=DATA/dataset_info.json \
      [--write_groundtruth] [--max_examples=N]

Writes OUT/panoptic/*.png + OUT/panoptic.json (COCO panoptic format, original category
ids, segment scores), OUT/metrics.json (fractions) and, with --write_groundtruth, the
ground truth in the same format (OUT/groundtruth*), so that
`python -m evaluation.panoptic_quality --gt_json_file=OUT/groundtruth.json
--pred_json_file=OUT/panoptic.json` reproduces the PQ of metrics.json.
The eval input size is `eval_input_size.size` (gin; the configs bind it); the loop is the
trainer's own (app.evaluation): every image is merged at the padded size and cropped to
its original size first.
dataset_info must agree with the shards (their dataset_info / conversion record) and
with a dataset_info.json beside the checkpoint; refusals print one line
`error: <file/flag>: ...` (exit status 2; --verbose for the traceback).
"""

import json
import os

from absl import flags
import tensorflow as tf

from data import input_pipeline
from deeplab2_kmax.app import checkpoints
from deeplab2_kmax.app import configs
from deeplab2_kmax.app import evaluation
from deeplab2_kmax.core import cli
from deeplab2_kmax.core import dataset_info as dataset_info_lib
from deeplab2_kmax.core import geometry
from deeplab2_kmax.model import build_model
from evaluation.pq_core import format_table
from evaluation import writers

FLAGS = flags.FLAGS


def define_flags():
  configs.define_model_flags(checkpoint_default=None)
  flags.DEFINE_string("output_dir", None, "Where predictions and metrics.json go.")
  flags.DEFINE_string("eval_tfrecord", None, "Glob of the evaluation TFRecord shards.")
  flags.DEFINE_integer("max_examples", 0, "Stop after this many images (0: all).")
  flags.DEFINE_integer("batch_size", 1, "Eval batch size.")
  flags.DEFINE_bool("write_groundtruth", False, "Also write the ground truth as COCO panoptic.")
  flags.DEFINE_bool("instance_ap", True, "Compute mask AP/AP50 of thing classes.")
  flags.mark_flags_as_required(["checkpoint", "output_dir", "eval_tfrecord", "dataset_info"])


def _image_id(raw, fallback: int):
  text = raw.decode() if isinstance(raw, bytes) else str(raw)
  if not text:
    return fallback
  return int(text) if text.isdigit() else text


def evaluate(gin_files, gin_bindings, checkpoint, output_dir, eval_tfrecord, dataset_info,
             max_examples=0, write_groundtruth=False, instance_ap=True,
             batch_size: int = 1) -> dict:
  """Runs the evaluation; returns the metrics dict written to output_dir/metrics.json."""
  if not tf.io.gfile.exists(dataset_info):
    raise cli.UserError(f"--dataset_info={dataset_info}: no such file")
  # Training-only configurables (optimizer, loss, trainer) may be absent: skip them.
  configs.parse_config(gin_files, gin_bindings, skip_unknown=True, finalize_config=False)
  info = dataset_info_lib.DatasetInfo.load(dataset_info)
  input_pipeline.check_dataset_info(info, dataset_info, eval_tfrecord, "--eval_tfrecord")
  prefix = checkpoints.resolve_checkpoint(checkpoint)
  dataset_info_lib.check_agrees(info, dataset_info,
                                os.path.join(os.path.dirname(prefix), "dataset_info.json"),
                                f"the checkpoint {prefix} was made with")
  model = build_model(num_classes=info.num_classes)
  checkpoints.restore_resolved(model, prefix)
  size = geometry.eval_input_size()
  kwargs = {"crop_size": size} if size else {}
  dataset = input_pipeline.build_dataset(eval_tfrecord, info, is_training=False,
                                         batch_size=batch_size, **kwargs)
  common = dict(label_divisor=info.label_divisor, ignore_label=info.ignore_label,
                thing_train_ids=info.thing_train_ids)
  categories = info.coco_categories()
  pred_writer = writers.CocoPanopticWriter(output_dir, categories,
                                           train_id_to_category_id=info.category_ids,
                                           name="panoptic", **common)
  gt_writer = (writers.CocoPanopticWriter(output_dir, categories,
                                          train_id_to_category_id=info.category_ids,
                                          name="groundtruth", **common)
               if write_groundtruth else None)
  source = f"--eval_tfrecord={eval_tfrecord}"  # image/id names the files

  def write(image: evaluation.ImageResult):
    image_id = _image_id(image.image_id, image.index)
    scores = dict(zip(image.segment_ids.tolist(), image.segment_scores.tolist()))
    pred_writer.add(image_id, image.panoptic, file_name=f"{image_id}.png", scores=scores,
                    source=source)
    if gt_writer is not None:
      gt_writer.add(image_id, image.groundtruth, file_name=f"{image_id}.png",
                    is_groundtruth=True, source=source)

  batches = input_pipeline.batches_naming_data_errors(
      dataset, {"--eval_tfrecord": eval_tfrecord}, dataset_info)
  try:
    metrics = evaluation.PanopticEvaluation(model, info, instance_ap=instance_ap).run(
        batches, max_examples or None, on_image=write)
  except ValueError as e:
    if "no examples" in str(e):
      raise cli.UserError(f"--eval_tfrecord={eval_tfrecord}: no examples") from e
    raise
  pred_writer.close()
  if gt_writer is not None:
    gt_writer.close()
  metrics = dict(checkpoint=prefix, **metrics)
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  return metrics


def main(argv):
  del argv
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  metrics = evaluate(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.checkpoint, FLAGS.output_dir,
                     FLAGS.eval_tfrecord, FLAGS.dataset_info, FLAGS.max_examples,
                     FLAGS.write_groundtruth, FLAGS.instance_ap, FLAGS.batch_size)
  print(format_table(metrics["panoptic_quality"]))
  print(json.dumps({k: metrics[k] for k in ("pq", "sq", "rq", "pq_th", "pq_st", "miou")
                    + (("ap", "ap50") if "ap" in metrics else ())}))


def entry():
  """`python evaluation/evaluate.py` and the `kmax-evaluate` command."""
  define_flags()
  cli.run(main)
