#!/usr/bin/env bash
# The main job on the built-in default (`make demo`), on CPU:
#   1. the virtualenv (if missing), 2. the synthetic COCO-panoptic dataset,
#   3. TFRecords by the real converter, 4. training of configs/synthetic/kmax_tiny.gin
#   with PQ evaluation on the val split, 5. a TF Serving SavedModel.
# Everything lands in $DEMO_OUTPUT (default demo_output/). Knobs (environment):
#   DEMO_OUTPUT, DEMO_TRAIN_STEPS, DEMO_NUM_TRAIN, DEMO_NUM_VAL, DEMO_SEED.
# Re-running resumes training from the checkpoints in $DEMO_OUTPUT/model.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${DEMO_OUTPUT:-demo_output}
STEPS=${DEMO_TRAIN_STEPS:-600}
NUM_TRAIN=${DEMO_NUM_TRAIN:-400}
NUM_VAL=${DEMO_NUM_VAL:-50}
SEED=${DEMO_SEED:-0}
CONFIG=configs/synthetic/kmax_tiny.gin
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-}

start=$(date +%s)
stamp() { echo "[demo $(( $(date +%s) - start ))s] $*"; }

if [[ ! -x $PY ]]; then
  stamp "creating the virtualenv (.venv)"
  make setup
fi

RAW=$OUT/synthetic
TFR=$OUT/tfrecords
MODEL=$OUT/model
EXPORT=$OUT/export
mkdir -p "$OUT"

if [[ ! -f $RAW/annotations/panoptic_val.json ]]; then
  stamp "generating the synthetic dataset ($NUM_TRAIN train / $NUM_VAL val images)"
  $PY data/make_synthetic.py --output_dir="$RAW" --num_train="$NUM_TRAIN" \
      --num_val="$NUM_VAL" --seed="$SEED"
fi
if [[ ! -f $TFR/dataset_info.json ]] || ! ls "$TFR"/val-*.tfrecord >/dev/null 2>&1; then
  for split in train val; do
    stamp "converting $split with data/build_coco_tfrecord.py"
    $PY data/build_coco_tfrecord.py --image_dir="$RAW/$split" \
        --panoptic_json="$RAW/annotations/panoptic_$split.json" \
        --panoptic_dir="$RAW/annotations/panoptic_$split" \
        --output_dir="$TFR" --split="$split" --num_shards=2 --num_workers=2 \
        --dataset_name=synthetic
  done
fi

stamp "training $CONFIG for $STEPS steps, then PQ on the val split"
$PY trainer/train.py --gin_file="$CONFIG" --model_dir="$MODEL" --mode=train_and_eval \
    --train_tfrecord="$TFR/train-*.tfrecord" --eval_tfrecord="$TFR/val-*.tfrecord" \
    --dataset_info="$TFR/dataset_info.json" --train_steps="$STEPS" --seed="$SEED"

if [[ -f deeplab2_kmax/export.py ]]; then
  stamp "exporting a SavedModel"
  $PY -m deeplab2_kmax.export --gin_file="$CONFIG" --checkpoint="$MODEL" \
      --dataset_info="$TFR/dataset_info.json" --output_dir="$EXPORT" \
      --input_size=129,129 --verify_tfrecord="$TFR/val-*.tfrecord" --verify_max_examples=10
  stamp "predictions + overlays for 4 val images (from the SavedModel)"
  $PY -m deeplab2_kmax.predict --saved_model="$EXPORT" --images="$RAW/val/val_00000[0-3].jpg" \
      --output_dir="$OUT/predictions" --overlay_scale=2
  stamp "pixel-cluster assignment figure"
  $PY -m deeplab2_kmax.visualize_clusters --gin_file="$CONFIG" --checkpoint="$MODEL" \
      --dataset_info="$TFR/dataset_info.json" --input_size=129,129 \
      --image="$RAW/val/val_000003.jpg" --output="$OUT/clusters.png"
else
  stamp "deeplab2_kmax/export.py not present: skipping the export"
fi

stamp "done"
$PY - "$MODEL" "$EXPORT" "$TFR" <<'EOF'
import json, os, sys
model_dir, export_dir, tfr = sys.argv[1:4]
history = [json.loads(l) for l in open(os.path.join(model_dir, "train", "history.jsonl"))]
keys = [k for k in history[0] if k.startswith("losses/")]
picks = sorted({0, len(history) // 4, len(history) // 2, 3 * len(history) // 4,
                len(history) - 1})
print("\nloss curve (mean over each logging interval):")
print("  step  " + "  ".join(f"{k[7:]:>14s}" for k in keys))
for i in picks:
  h = history[i]
  print(f"  {h['step']:4d}  " + "  ".join(f"{h[k]:14.4f}" for k in keys))
m = json.load(open(os.path.join(model_dir, "eval", "metrics.json")))
print(f"\nfinal PQ on the synthetic val split ({m['num_images']} images, step {m['step']}): "
      f"PQ {m['pq']:.4f}  SQ {m['sq']:.4f}  RQ {m['rq']:.4f}  PQ_th {m['pq_th']:.4f}  "
      f"PQ_st {m['pq_st']:.4f}  mIoU {m['miou']:.4f}")
print("\nwhere everything is:")
print(f"  TFRecords + dataset_info.json   {tfr}")
print(f"  checkpoints                     {model_dir}")
print(f"  TensorBoard logs                tensorboard --logdir {model_dir}")
print(f"  metrics                         {os.path.join(model_dir, 'eval', 'metrics.json')}")
if os.path.isdir(export_dir):
  out = os.path.dirname(export_dir)
  print(f"  SavedModel (TF Serving)         {export_dir}")
  print(f"  overlays + COCO panoptic preds  {os.path.join(out, 'predictions')}")
  print(f"  cluster assignment figure       {os.path.join(out, 'clusters.png')}")
EOF
