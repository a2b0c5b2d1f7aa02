"""Latency and peak memory of the exported artifacts in their runtimes vs the SavedModel.

    python benchmarks/export_runtimes.py [--cases=synthetic/kmax_tiny.gin@129,coco/kmax_r50.gin@641]
        [--repeats=10] [--variants=saved_model,onnx,litert,openvino,openvino_bf16]
        [--checkpoint=demo_output/model --dataset_info=... --agreement_tfrecord='...val-*']

For each case (config @ square export size) the model is built (random weights, or
`--checkpoint` for the one case whose config it was trained with), exported as a
SavedModel and as ONNX / LiteRT / OpenVINO artifacts, and each variant runs in its own
process on one 8-bit image at the export size (batch 1, CPU, `--threads`): the
SavedModel's `serve_images` in TensorFlow, onnxruntime, the LiteRT interpreter,
OpenVINO's CPU plugin in float32 and in bfloat16 (`openvino_bf16`:
INFERENCE_PRECISION_HINT=bf16, same file). Optional
reduced-precision artifacts: `litert_fp16` (float16 weights) and `litert_int8`
(dynamic-range int8 weights), `onnx_int8` (onnxruntime.quantization.quantize_dynamic).
One JSON line per (case, variant): median and min of `--repeats` calls after 2 warm-up
calls, the first call, the process's peak RSS (VmHWM: the runtime, its model and the
call's working memory) and its RSS before loading the model (Python + numpy),
the artifact's bytes; with `--agreement_tfrecord` also the agreement with the Python
path (`app/export_formats/verify.py`) on that split (min / mean over images).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS
flags.DEFINE_list("cases", ["synthetic/kmax_tiny.gin@129", "coco/kmax_r50.gin@641"],
                  "config (under configs/) @ square export size")
flags.DEFINE_list("variants", ["saved_model", "onnx", "litert", "openvino", "openvino_bf16"],
                  "what to time: saved_model, onnx, litert, openvino, openvino_bf16, "
                  "litert_fp16, litert_int8, onnx_int8")
flags.DEFINE_integer("repeats", 10, "timed calls per variant")
flags.DEFINE_integer("threads", 0, "threads of every runtime (0: each runtime's default; "
                     "1 gives comparable numbers on a machine shared with other work)")
flags.DEFINE_integer("num_classes", 133, "classes when no --dataset_info (COCO: 133)")
flags.DEFINE_string("checkpoint", "", "a checkpoint of the FIRST case's config (else "
                    "random weights)")
flags.DEFINE_string("dataset_info", "", "its dataset_info.json")
flags.DEFINE_string("agreement_tfrecord", "", "with --checkpoint: measure each variant's "
                    "agreement with the Python path on this split (first case only)")
flags.DEFINE_integer("agreement_max_examples", 0, "0: every image of the split")
flags.DEFINE_string("work_dir", "", "where artifacts go (default: a temporary folder)")
# Internal: one variant in a child process.
flags.DEFINE_string("child", "", "internal")
flags.DEFINE_string("child_model", "", "internal")
flags.DEFINE_string("child_image", "", "internal")

COCO_NUM_THINGS = 80
CONVERSIONS = {"onnx": ("onnx", {}), "litert": ("litert", {}), "openvino": ("openvino", {}),
               "openvino_bf16": ("openvino", {}), "litert_fp16": ("litert", "fp16"),
               "litert_int8": ("litert", "int8"), "onnx_int8": ("onnx", "int8")}


def _status_mib(field: str) -> float:
  """VmRSS / VmHWM (peak RSS) of this process. Not getrusage's ru_maxrss: that one
  survives exec, so a child started from a big parent would report the parent's."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024
  return 0.0


def run_child() -> None:
  """Times one variant on the image in --child_image; prints one JSON object."""
  import numpy as np
  image = np.load(FLAGS.child_image)
  size = np.array([image.shape[:2]], np.int32)
  rss_before = _status_mib("VmRSS")
  start = time.perf_counter()
  if FLAGS.child == "saved_model":
    import tensorflow as tf
    if FLAGS.threads:
      tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
      tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    serve = tf.saved_model.load(FLAGS.child_model).signatures["serve_images"]
    batch = tf.constant(image[None])
    call = lambda: serve(images=batch)["num_segments"].numpy()
  else:
    from deeplab2_kmax.app.export_formats import artifacts  # lazy: TF-free children
    options = {"precision": "bf16"} if FLAGS.child == "openvino_bf16" else {}
    runner = artifacts.load_runner(FLAGS.child_model, threads=FLAGS.threads, **options)
    call = lambda: runner(image[None], size)
  load_s = time.perf_counter() - start
  start = time.perf_counter()
  call()
  first = time.perf_counter() - start
  call()
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  print(json.dumps({"median_s": statistics.median(times), "min_s": min(times),
                    "first_call_s": first, "load_s": load_s,
                    "rss_before_load_mib": rss_before,
                    "peak_rss_mib": _status_mib("VmHWM")}))


def _info(checkpoint: bool):
  """The checkpoint's dataset_info, else COCO-like labels (--num_classes, 80 things)."""
  from deeplab2_kmax.core.dataset_info import DatasetInfo  # lazy: TF-free children
  if checkpoint:
    return DatasetInfo.load(FLAGS.dataset_info)
  num_classes = FLAGS.num_classes
  cats = [{"id": i + 1, "name": f"class{i}", "isthing": int(i < COCO_NUM_THINGS)}
          for i in range(num_classes)]
  return DatasetInfo.from_coco_categories("benchmark", cats, label_divisor=256,
                                          ignore_label=255)


def _predictor(config, size, checkpoint, info):
  import gin
  import numpy as np
  from deeplab2_kmax.app import predictor as predictor_lib  # lazy: TF-free children
  from deeplab2_kmax.model import build_model  # lazy: TF-free children
  from deeplab2_kmax.post_processing import MaskWiseMerger  # lazy: TF-free children
  from deeplab2_kmax.tools import model_stats  # lazy: TF-free children

  if checkpoint:
    return predictor_lib.load_predictor([config], [], checkpoint, info, (size, size))
  model_stats.register_configurables()
  with gin.unlock_config():
    gin.clear_config()
    gin.parse_config_files_and_bindings([config], [], skip_unknown=True)
  model = build_model(num_classes=info.num_classes)
  model(np.zeros((1, 65, 65, 3), "float32"), training=False)
  merger = MaskWiseMerger(thing_train_ids=info.thing_train_ids,
                          label_divisor=info.label_divisor, ignore_label=info.ignore_label,
                          mask_stride=model.output_stride)
  return predictor_lib.PanopticPredictor(model, merger, info.label_divisor, info.ignore_label,
                                     input_size=(size, size))


def _export(variant, predictor, info, size, work, serving, paths):
  """Path of the variant's artifact (shared between variants of one file)."""
  from deeplab2_kmax.app import saved_model  # lazy: TF-free children
  from deeplab2_kmax.app.export_formats import artifacts  # lazy: TF-free children

  if variant == "saved_model":
    return saved_model.export_saved_model(predictor, info, os.path.join(work, "saved_model"))
  fmt, quantize = CONVERSIONS[variant]
  key = (fmt, quantize or "")
  if key in paths:
    return paths[key]
  if fmt == "onnx" and quantize:  # quantize the float artifact (no second conversion)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    source = _export("onnx", predictor, info, size, work, serving, paths)
    folder = os.path.join(work, variant)
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(os.path.dirname(source), "dataset_info.json"), folder)
    paths[key] = os.path.join(folder, "model.onnx")
    quantize_dynamic(source, paths[key], weight_type=QuantType.QInt8)
    return paths[key]
  options = {}
  if fmt == "litert" and quantize:
    import tensorflow as tf
    options = {"optimizations": [tf.lite.Optimize.DEFAULT],
               "supported_types": [tf.float16] if quantize == "fp16" else []}
  folder = os.path.join(work, variant)
  path = artifacts.export_artifact(fmt, predictor, info, folder, (size, size),
                                   serving=serving, **options)
  paths[key] = path
  return path


def _agreement(variant, path, predictor):
  from deeplab2_kmax.app.export_formats import artifacts  # lazy: TF-free children
  from deeplab2_kmax.app.export_formats.artifact_predictor import (  # lazy: TF-free children
      ArtifactPredictor)
  from deeplab2_kmax.app.export_formats.verify import verify_artifact  # lazy: TF-free children

  if variant == "saved_model":
    return {"min_agreement": 1.0, "mean_agreement": 1.0, "note": "exact (export verify)"}
  options = {"precision": "bf16"} if variant == "openvino_bf16" else {}
  artifact = ArtifactPredictor(artifacts.load_runner(path, threads=FLAGS.threads, **options))
  result = verify_artifact(artifact, predictor, FLAGS.agreement_tfrecord,
                           FLAGS.agreement_max_examples, threshold=0.0, desc=variant)
  return {k: result[k] for k in ("images", "min_agreement", "mean_agreement",
                                 "identical_images")}


def _blob_image(size: int, seed: int):
  """A smooth random uint8 RGB image (upsampled noise), so the model predicts segments."""
  import numpy as np  # lazy: TF-free children
  from PIL import Image  # lazy: TF-free children
  small = np.random.default_rng(seed).integers(0, 256, (max(2, size // 8),) * 2 + (3,))
  return np.asarray(Image.fromarray(small.astype(np.uint8)).resize((size, size),
                                                                   Image.BILINEAR))


def main(argv):
  del argv
  if FLAGS.child:
    return run_child()
  import numpy as np
  from deeplab2_kmax.app.export_formats import artifacts  # lazy: TF-free children
  from deeplab2_kmax.app.export_formats.serving_graph import PortableServing  # lazy: TF-free children

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="export_runtimes_")
  for index, case in enumerate(FLAGS.cases):
    config, size = case.split("@")
    size = int(size)
    checkpoint = FLAGS.checkpoint if index == 0 else ""
    info = _info(bool(checkpoint))
    predictor = _predictor(os.path.join(root, "configs", config), size, checkpoint, info)
    serving = PortableServing(predictor, (size, size))
    case_dir = os.path.join(work, f"{os.path.basename(config)[:-4]}_{size}")
    image_path = os.path.join(case_dir, "image.npy")
    os.makedirs(case_dir, exist_ok=True)
    np.save(image_path, _blob_image(size, seed=size))
    paths = {}
    for variant in FLAGS.variants:
      record = {"bench": "export_runtimes", "config": config, "size": size, "batch": 1,
                "variant": variant, "weights": "checkpoint" if checkpoint else "random",
                "repeats": FLAGS.repeats}
      try:
        start = time.perf_counter()
        path = _export(variant, predictor, info, size, case_dir, serving, paths)
        record["export_s"] = round(time.perf_counter() - start, 1)
        record["bytes"] = artifacts.artifact_bytes(path)
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), f"--child={variant}",
             f"--child_model={path}", f"--child_image={image_path}",
             f"--repeats={FLAGS.repeats}"], capture_output=True, text=True, timeout=3600,
            env=dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get(
                "PYTHONPATH", "")))
        if proc.returncode:
          raise RuntimeError(proc.stderr.strip().splitlines()[-1][:300])
        timing = json.loads(proc.stdout.strip().splitlines()[-1])
        record.update({k: round(v, 4 if k.endswith("_s") else 1) for k, v in timing.items()})
        if checkpoint and FLAGS.agreement_tfrecord:
          record.update(_agreement(variant, path, predictor))
      except Exception as e:  # pylint: disable=broad-except
        record["error"] = f"{type(e).__name__}: {str(e)[:300]}"
      print(json.dumps(record), flush=True)


if __name__ == "__main__":
  sys.setrecursionlimit(10000)
  app.run(main)
