"""The package's public API (deeplab2_kmax/__init__.py), each in a fresh process as a
user meets it: names resolve lazily, a config parses and builds, core stays TF-free."""
import os
import subprocess
import sys

import pytest

import deeplab2_kmax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, cwd: str = ROOT) -> str:
  result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


def test_every_public_name_resolves_to_its_module_object():
  from deeplab2_kmax import model
  from deeplab2_kmax.app import checkpoints, configs, predictor, saved_model
  assert deeplab2_kmax.build_model is model.build_model
  assert deeplab2_kmax.parse_config is configs.parse_config
  assert deeplab2_kmax.restore_model is checkpoints.restore_model
  assert deeplab2_kmax.load_predictor is predictor.load_predictor
  assert deeplab2_kmax.PanopticPredictor is predictor.PanopticPredictor
  assert deeplab2_kmax.export_saved_model is saved_model.export_saved_model
  assert set(deeplab2_kmax.__all__) <= set(dir(deeplab2_kmax))
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    deeplab2_kmax.nope  # pylint: disable=pointless-statement


def test_a_config_parses_and_builds_from_any_folder(tmp_path):
  """The README's example: parse configs/coco/kmax_r50.gin (its include and every binding,
  eval_input_size included) from outside the repository, then build."""
  out = _run(
      "import deeplab2_kmax as kmax\n"
      f"kmax.parse_config([{os.path.join(ROOT, 'configs/coco/kmax_r50.gin')!r}], [\n"
      "    'build_model.backbone_kwargs = {\"depths\": (1, 1, 1, 1), "
      "\"width_multiplier\": 0.125}',\n"
      "    'build_model.pixel_decoder_dims = (16, 8, 8, 8)', 'build_model.num_queries = 8'])\n"
      "model = kmax.build_model(num_classes=5)\n"
      "from deeplab2_kmax.core import geometry\n"
      "print(model.backbone_name, model.num_queries, geometry.eval_input_size())\n",
      cwd=str(tmp_path))
  assert out.split() == ["resnet50", "8", "(1281,", "1281)"]  # COCO evaluates at 1281²


def test_importing_core_does_not_load_tensorflow():
  out = _run("import sys\n"
             "import deeplab2_kmax\n"
             "from deeplab2_kmax.core import cli, dataset_info, safe_paths, versions\n"
             "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
  assert out.split() == ["False", "False"]
