"""Every CLI refuses bad input with one line `error: <file/flag>: <what>`, exit status 2
and no traceback (deeplab2_kmax/core/cli.py)."""
import os
import subprocess
import sys

from deeplab2_kmax.core.cli_test import refusal_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "synthetic", "kmax_tiny.gin")


def _cases(tmp):
  info = os.path.join(tmp, "dataset_info.json")
  with open(info, "w") as f:
    f.write('{"name": "x", "label_divisor": 256, "ignore_label": 255, "categories": '
            '[{"id": 1, "train_id": 0, "name": "a", "isthing": 0, "color": [1, 2, 3]}]}')
  os.makedirs(os.path.join(tmp, "empty_model_dir"))
  missing = os.path.join(tmp, "missing")
  return [
      (["data/build_coco_tfrecord.py", f"--image_dir={tmp}",
        f"--panoptic_json={missing}.json", f"--panoptic_dir={tmp}", f"--output_dir={tmp}/o"],
       rf"^error: {missing}\.json: cannot read panoptic JSON"),
      (["data/build_coco_tfrecord.py", f"--image_dir={tmp}"],
       r"^error: --output_dir, --panoptic_json, --panoptic_dir: required flag not set$"),
      (["data/build_cityscapes_tfrecord.py", f"--cityscapes_root={missing}",
        f"--output_dir={tmp}/o"], rf"^error: {missing}/gtFine/cityscapes_panoptic_val\.json: "),
      (["data/dump_tfrecord.py", f"--input_pattern={missing}-*", f"--output_dir={tmp}/d"],
       rf"^error: --input_pattern={missing}-\*: matches no files$"),
      (["data/make_synthetic.py", f"--output_dir={tmp}/s", "--image_size=8"],
       r"^error: --image_size=8: must be >= 32$"),
      (["-m", "evaluation.panoptic_quality", f"--gt_json_file={missing}.json",
        f"--pred_json_file={missing}.json"],
       rf"^error: {missing}\.json: cannot read ground-truth JSON \(No such file"),
      (["trainer/train.py", f"--gin_file={TINY}", f"--model_dir={tmp}/m"],
       r"^error: --dataset_info: the dataset_info\.json path is not set"),
      (["evaluation/evaluate.py", f"--gin_file={TINY}", f"--checkpoint={missing}/ckpt-1",
        f"--output_dir={tmp}/e", f"--eval_tfrecord={tmp}/*", f"--dataset_info={info}"],
       rf"^error: --checkpoint={missing}/ckpt-1: no such checkpoint"),
      (["-m", "deeplab2_kmax.export", f"--gin_file={TINY}",
        f"--checkpoint={tmp}/empty_model_dir", f"--dataset_info={info}",
        f"--output_dir={tmp}/x"],
       rf"^error: --checkpoint={tmp}/empty_model_dir: directory holds no checkpoint$"),
      (["-m", "deeplab2_kmax.predict", f"--saved_model={missing}", f"--images={tmp}/*.jpg",
        f"--output_dir={tmp}/p"], rf"^error: --saved_model={missing}: neither a SavedModel"),
      (["-m", "deeplab2_kmax.visualize_clusters", f"--gin_file={TINY}",
        f"--checkpoint={tmp}/empty_model_dir", f"--dataset_info={info}",
        f"--image={missing}.jpg", f"--output={tmp}/c.png"],
       rf"^error: --image={missing}\.jpg: no such file$"),
      (["-m", "deeplab2_kmax.tools.model_stats", f"--gin_file={missing}.gin"],
       rf"^error: --gin_file={missing}\.gin: no such file$"),
  ]


def test_every_cli_refuses_in_one_line(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  cases = _cases(str(tmp_path))
  procs = []
  for i in range(0, len(cases), 2):  # two at a time: the machine has 2 cores
    batch = [(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE), pattern)
             for args, pattern in cases[i:i + 2]]
    for proc, pattern in batch:
      out, err = proc.communicate(timeout=300)
      procs.append((subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                    pattern))
  for proc, pattern in procs:
    refusal_line(proc, pattern)
