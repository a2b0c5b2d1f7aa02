"""trainer/train.py CLI: clear flag errors; end to end on a tiny converted dataset;
the two-process MultiWorkerMirroredStrategy check."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
TINY = os.path.join(ROOT, "configs", "synthetic", "kmax_tiny.gin")


def _train(*args, timeout=600):
  return subprocess.run([PY, "trainer/train.py", *args], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=timeout)


def test_missing_dataset_info_names_the_flag(tmp_path):
  proc = _train(f"--gin_file={TINY}", f"--model_dir={tmp_path}", "--mode=train")
  assert proc.returncode != 0
  assert "--dataset_info" in proc.stderr


def test_missing_gin_file_names_the_file(tmp_path):
  proc = _train("--gin_file=nope.gin", f"--model_dir={tmp_path}")
  assert proc.returncode != 0 and "--gin_file=nope.gin" in proc.stderr


def _tiny_dataset(root):
  raw, tfr = root / "raw", root / "tfr"
  subprocess.run([PY, "data/make_synthetic.py", f"--output_dir={raw}", "--num_train=8",
                  "--num_val=4", "--image_size=64"], cwd=ROOT, env=ENV, check=True,
                 capture_output=True)
  for split in ("train", "val"):
    subprocess.run([PY, "data/build_coco_tfrecord.py", f"--image_dir={raw}/{split}",
                    f"--panoptic_json={raw}/annotations/panoptic_{split}.json",
                    f"--panoptic_dir={raw}/annotations/panoptic_{split}",
                    f"--output_dir={tfr}", f"--split={split}", "--num_shards=1",
                    "--num_workers=1"], cwd=ROOT, env=ENV, check=True, capture_output=True)
  return tfr


@pytest.mark.slow  # traces the real model's train and eval graphs (~1-2 min on 2 cores)
def test_train_and_eval_then_eval_mode_end_to_end(tmp_path):
  tfr = _tiny_dataset(tmp_path)
  model_dir = tmp_path / "model"
  common = [f"--gin_file={TINY}", f"--model_dir={model_dir}",
            f"--dataset_info={tfr}/dataset_info.json",
            f"--eval_tfrecord={tfr}/val-*.tfrecord",
            "--gin_bindings=build_dataset.crop_size = (65, 65)",
            "--gin_bindings=build_dataset.batch_size = 2",
            "--gin_bindings=eval_input_size.size = (65, 65)",
            "--gin_bindings=Trainer.steps_per_loop = 2"]
  proc = _train(*common, "--mode=train_and_eval", f"--train_tfrecord={tfr}/train-*",
                "--train_steps=3", "--seed=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (model_dir / "ckpt-3.index").exists()
  metrics = json.loads((model_dir / "eval" / "metrics.json").read_text())
  assert {"pq", "sq", "rq", "pq_th", "pq_st", "miou", "step"} <= set(metrics)
  assert metrics["step"] == 3 and metrics["num_images"] == 4
  assert all(0.0 <= metrics[k] <= 1.0 for k in ("pq", "sq", "rq", "miou"))
  history = [json.loads(l) for l in (model_dir / "train" / "history.jsonl").open()]
  assert [h["step"] for h in history] == [2, 3]
  assert os.listdir(model_dir / "train") and (model_dir / "operative_config.gin").exists()

  # eval mode re-evaluates the latest checkpoint: the same numbers.
  proc = _train(*common, "--mode=eval")
  assert proc.returncode == 0, proc.stderr[-3000:]
  again = json.loads((model_dir / "eval" / "metrics.json").read_text())
  for key in ("pq", "sq", "rq", "miou", "step"):
    assert again[key] == pytest.approx(metrics[key]), key

  # resuming a finished run trains nothing and keeps the step.
  proc = _train(*common, "--mode=train", f"--train_tfrecord={tfr}/train-*",
                "--train_steps=3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "nothing to train" in proc.stderr


@pytest.mark.slow  # two TF processes talking gRPC on 127.0.0.1 (~30 s on 2 cores)
def test_two_process_multi_worker_identical_weights(tmp_path):
  proc = subprocess.run([PY, "-m", "tools.multiworker_check", f"--workdir={tmp_path}"],
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=400)
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert proc.returncode == 0 and report["ok"], report
  assert report["identical_weights"] and report["replicas"] == 2
  assert report["steps"] == [6, 6]
