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

from deeplab2_kmax.app import evaluate

if __name__ == "__main__":
  evaluate.entry()
