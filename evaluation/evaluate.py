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
The eval size / batch come from `experiment_options` (gin) like the trainer's eval;
every image is merged at the padded size and cropped to its original size first.
dataset_info must agree with the shards (their dataset_info / conversion record) and
with a dataset_info.json beside the checkpoint; refusals print one line
`error: <file/flag>: ...` (exit status 2; --verbose for the traceback).
"""

import json
import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import cli  # pylint: disable=g-import-not-at-top
from evaluation.instance_ap import InstanceAP  # pylint: disable=g-import-not-at-top
from evaluation.miou import MeanIoU  # pylint: disable=g-import-not-at-top
from evaluation.panoptic_quality import PanopticQualityAccumulator  # pylint: disable=g-import-not-at-top
from evaluation import writers  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_multi_string("gin_file", [], "Gin config(s) the checkpoint was trained with.")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
  flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (model_dir/ckpt-N) or model_dir.")
  flags.DEFINE_string("output_dir", None, "Where predictions and metrics.json go.")
  flags.DEFINE_string("eval_tfrecord", None, "Glob of the evaluation TFRecord shards.")
  flags.DEFINE_string("dataset_info", None, "The converter's dataset_info.json.")
  flags.DEFINE_integer("max_examples", 0, "Stop after this many images (0: all).")
  flags.DEFINE_bool("write_groundtruth", False, "Also write the ground truth as COCO panoptic.")
  flags.DEFINE_bool("instance_ap", True, "Compute mask AP/AP50 of thing classes.")
  flags.mark_flags_as_required(["checkpoint", "output_dir", "eval_tfrecord", "dataset_info"])


def _image_id(raw, fallback: int):
  text = raw.decode() if isinstance(raw, bytes) else str(raw)
  if not text:
    return fallback
  return int(text) if text.isdigit() else text


def evaluate(gin_files, gin_bindings, checkpoint, output_dir, eval_tfrecord, dataset_info,
             max_examples=0, write_groundtruth=False, instance_ap=True) -> dict:
  """Runs the evaluation; returns the metrics dict written to output_dir/metrics.json."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from data import dataset_info as dataset_info_lib  # pylint: disable=g-import-not-at-top
  from data import input_pipeline  # pylint: disable=g-import-not-at-top
  from data.dataset_info import DatasetInfo  # pylint: disable=g-import-not-at-top
  from data.input_pipeline import build_dataset  # pylint: disable=g-import-not-at-top
  from deeplab2_kmax.inference import resolve_checkpoint, restore_model  # pylint: disable=g-import-not-at-top
  from deeplab2_kmax.model import build_model  # pylint: disable=g-import-not-at-top
  from deeplab2_kmax.post_processing import MaskWiseMerger  # pylint: disable=g-import-not-at-top
  from trainer.experiment import experiment_options  # pylint: disable=g-import-not-at-top

  if not tf.io.gfile.exists(dataset_info):
    raise cli.UserError(f"--dataset_info={dataset_info}: no such file")
  # Training-only configurables (optimizer, loss, trainer) may be absent: skip them.
  cli.parse_gin(gin_files, gin_bindings, skip_unknown=True, finalize_config=False)
  info = DatasetInfo.load(dataset_info)
  input_pipeline.check_dataset_info(info, dataset_info, eval_tfrecord, "--eval_tfrecord")
  prefix = resolve_checkpoint(checkpoint)
  dataset_info_lib.check_agrees(info, dataset_info,
                                os.path.join(os.path.dirname(prefix), "dataset_info.json"),
                                f"the checkpoint {prefix} was made with")
  model = build_model(num_classes=info.num_classes)
  restore_model(model, prefix)
  options = experiment_options()
  kwargs = {"crop_size": options["eval_crop_size"]} if options["eval_crop_size"] else {}
  dataset = build_dataset(eval_tfrecord, info, is_training=False,
                          batch_size=options["eval_batch_size"], **kwargs)
  merger = MaskWiseMerger(thing_train_ids=info.thing_train_ids,
                          label_divisor=info.label_divisor, ignore_label=info.ignore_label,
                          mask_stride=model.output_stride)

  predict = tf.function(lambda images: model(images, training=False))

  @tf.function(reduce_retracing=True)
  def merge(class_logits, mask_logits, padded, original):
    out = merger({"class_logits": class_logits, "mask_logits": mask_logits},
                 (padded[0], padded[1]), (original[0], original[1]))
    return {k: v[0] for k, v in out.items()}

  cat_of = info.train_id_to_category_id
  cat_ids = [cat_of[t] for t in range(info.num_classes)]
  common = dict(label_divisor=info.label_divisor, ignore_label=info.ignore_label,
                thing_train_ids=info.thing_train_ids)
  pq = PanopticQualityAccumulator.from_dataset_info(info)
  miou = MeanIoU(info.num_classes, info.ignore_label, class_names=info.names)
  ap = InstanceAP(category_ids=cat_ids, **common) if instance_ap else None
  categories = info.coco_categories()
  pred_writer = writers.CocoPanopticWriter(output_dir, categories,
                                           train_id_to_category_id=cat_ids,
                                           name="panoptic", **common)
  gt_writer = (writers.CocoPanopticWriter(output_dir, categories,
                                          train_id_to_category_id=cat_ids,
                                          name="groundtruth", **common)
               if write_groundtruth else None)
  count = 0
  bar = tqdm(desc="evaluate", unit="img", total=max_examples or None)
  batches = input_pipeline.batches_naming_data_errors(
      dataset, {"--eval_tfrecord": eval_tfrecord}, dataset_info)
  for features, labels in batches:
    images = features["image"]
    outputs = predict(images)
    padded = tf.shape(images)[1:3]
    sizes = labels["original_size"].numpy()
    gts = labels["panoptic"].numpy()
    ids = labels["image_id"].numpy()
    for i in range(images.shape[0]):
      if max_examples and count >= max_examples:
        break
      h, w = int(sizes[i][0]), int(sizes[i][1])
      out = merge(outputs["class_logits"][i:i + 1], outputs["mask_logits"][i:i + 1],
                  padded, tf.constant([h, w], tf.int32))
      pred = out["panoptic"].numpy()
      gt = gts[i, :h, :w]
      num = int(out["num_segments"])
      seg_ids = out["segment_ids"].numpy()[:num]
      seg_scores = out["segment_scores"].numpy()[:num]
      pq.update(gt, pred)
      miou.update(gt // info.label_divisor, out["semantic"].numpy())
      if ap is not None:
        ap.update(gt, pred, seg_ids, seg_scores)
      image_id = _image_id(ids[i], count)
      scores = dict(zip(seg_ids.tolist(), seg_scores.tolist()))
      source = f"--eval_tfrecord={eval_tfrecord}"  # image/id names the files
      pred_writer.add(image_id, pred, file_name=f"{image_id}.png", scores=scores,
                      source=source)
      if gt_writer is not None:
        gt_writer.add(image_id, gt, file_name=f"{image_id}.png", is_groundtruth=True,
                      source=source)
      count += 1
      bar.update(1)
    if max_examples and count >= max_examples:
      break
  bar.close()
  if count == 0:
    raise cli.UserError(f"--eval_tfrecord={eval_tfrecord}: no examples")
  pred_writer.close()
  if gt_writer is not None:
    gt_writer.close()
  result = pq.result()
  seg = miou.result()
  metrics = {"checkpoint": prefix, "num_images": count,
             "pq": result["All"]["pq"], "sq": result["All"]["sq"], "rq": result["All"]["rq"],
             "pq_th": result["Things"]["pq"], "pq_st": result["Stuff"]["pq"],
             "miou": seg["miou"], "panoptic_quality": result, "semantic": seg}
  if ap is not None:
    metrics.update(ap.result())
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1)
  return metrics


def main(argv):
  del argv
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  metrics = evaluate(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.checkpoint, FLAGS.output_dir,
                     FLAGS.eval_tfrecord, FLAGS.dataset_info, FLAGS.max_examples,
                     FLAGS.write_groundtruth, FLAGS.instance_ap)
  from evaluation.pq_core import format_table  # pylint: disable=g-import-not-at-top
  print(format_table(metrics["panoptic_quality"]))
  print(json.dumps({k: metrics[k] for k in ("pq", "sq", "rq", "pq_th", "pq_st", "miou")
                    + (("ap", "ap50") if "ap" in metrics else ())}))


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
