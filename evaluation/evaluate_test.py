"""End to end: synthetic TFRecords + tiny kMaX checkpoint -> evaluate.py -> files.

Slow (builds and runs the tiny model in a subprocess, ~30-60 s on 2 cores): it is the
only test that runs the whole evaluation path (input pipeline, model, merger, all
metrics, writers) and checks the written COCO-panoptic files against the offline CLI.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "synthetic", "kmax_tiny.gin")
BINDINGS = ["eval_input_size.size=(65, 65)"]


@pytest.mark.slow
def test_evaluate_writes_predictions_and_metrics_matching_offline_cli(tmp_path):
  import gin
  import tensorflow as tf
  from data import converter, make_synthetic
  from deeplab2_kmax.model import build_model
  from evaluation import panoptic_quality as pqm

  syn = tmp_path / "syn"
  json_path = make_synthetic.make_dataset(str(syn), 0, 3, seed=0, image_size=64)["val"]
  data = tmp_path / "data"
  info = converter.convert_coco_panoptic(
      str(syn / "val"), json_path, str(syn / "annotations" / "panoptic_val"), str(data),
      "val", 1, 1, 256, 255, "synthetic")
  gin.clear_config()
  gin.parse_config_files_and_bindings([TINY], BINDINGS, skip_unknown=True,
                                      finalize_config=False)
  model = build_model(num_classes=info.num_classes)
  model(tf.zeros([1, 65, 65, 3]), training=False)
  prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "model" / "ckpt"))
  gin.clear_config()

  out = tmp_path / "eval"
  cmd = [sys.executable, os.path.join(ROOT, "evaluation", "evaluate.py"),
         f"--gin_file={TINY}", f"--checkpoint={prefix}", f"--output_dir={out}",
         f"--eval_tfrecord={data}/val-*", f"--dataset_info={data}/dataset_info.json",
         "--write_groundtruth", "--batch_size=2"] + [f"--gin_bindings={b}" for b in BINDINGS]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["num_images"] == 3
  for key in ("pq", "sq", "rq", "pq_th", "pq_st", "miou", "ap", "ap50"):
    assert 0.0 <= metrics[key] <= 1.0
  assert metrics["panoptic_quality"]["All"]["n"] > 0  # the ground truth has segments
  pred = json.loads((out / "panoptic.json").read_text())
  assert len(pred["annotations"]) == 3
  assert {c["id"] for c in pred["categories"]} == {c.id for c in info.categories}
  for ann in pred["annotations"]:
    assert (out / "panoptic" / ann["file_name"]).exists()
  offline = pqm.pq_compute(str(out / "groundtruth.json"), str(out / "panoptic.json"),
                           str(out / "groundtruth"), str(out / "panoptic"),
                           num_workers=1, progress=False)
  for split in ("All", "Things", "Stuff"):
    for key in ("pq", "sq", "rq", "n"):
      assert offline[split][key] == pytest.approx(
          metrics["panoptic_quality"][split][key], abs=1e-12)
