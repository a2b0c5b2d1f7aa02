"""Every model config in configs/ builds and runs a first training-mode call and an
inference call.

The widths are shrunk by gin bindings (same architecture, backbone class, interaction,
decoder stages and heads), so that all configs fit in the suite; a bug in how any
backbone or layer builds itself (e.g. a fast path reading a weight before the layer is
built) fails here for the config that uses it.
"""

import glob
import os

import gin
import numpy as np
import pytest

from deeplab2_kmax.app import configs
from deeplab2_kmax import model as model_lib

ROOT = configs.REPO_ROOT
TINY_MODEL = [
    "build_model.num_queries = 8", "build_model.axial_num_heads = 2",
    "build_model.decoder_channels = 16", "build_model.decoder_key_depth = 8",
    "build_model.decoder_value_depth = 16", "build_model.decoder_num_heads = 2",
    "build_model.ffn_channels = 16", "build_model.embedding_dim = 8",
    "build_model.pixel_head_channels = 16", "build_model.semantic_channels = 8",
    "build_model.semantic_low_level_channels = (8, 8)",
]
TINY_BACKBONE = {
    "resnet": '{"depths": (1, 1, 1, 1), "width_multiplier": 0.125, '
              '"stem_width_multiplier": 0.25, "drop_path_rate": %r}',
    "axial": '{"depths": (1, 1, 1, 1), "width_multiplier": 0.125, '
             '"stem_width_multiplier": 0.25, "num_heads": 2, "drop_path_rate": %r}',
    "convnext": '{"depths": (1, 1, 2, 1), "dims": (8, 16, 32, 64), "drop_path_rate": %r}',
}


def model_configs():
  """Every gin file under configs/ except the shared parts (base*, recipe*)."""
  paths = glob.glob(os.path.join(ROOT, "configs", "**", "*.gin"), recursive=True)
  return sorted(os.path.relpath(p, ROOT) for p in paths
                if not os.path.basename(p).startswith(("base", "recipe")))


def _family(backbone: str) -> str:
  if "convnext" in backbone:
    return "convnext"
  return "axial" if "axial" in backbone or backbone == "max_s" else "resnet"


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def test_model_configs_are_found():
  configs = model_configs()
  assert "configs/coco/kmax_convnext_large.gin" in configs
  assert "configs/cityscapes/kmax_r50.gin" in configs
  assert "configs/coco/ablations/maxs_decoders_111.gin" in configs
  assert "configs/synthetic/kmax_tiny.gin" in configs
  assert not any(os.path.basename(p) in ("base.gin", "recipe.gin") for p in configs)


@pytest.mark.parametrize("path", model_configs())
def test_config_builds_and_runs_training_and_inference(path):
  # skip_unknown: configs such as the synthetic one also bind the trainer.
  configs.parse_config([os.path.join(ROOT, path)], skip_unknown=True, clear=True)
  bound = gin.get_bindings("build_model")
  stages = len(bound["pixel_decoder_dims"])
  rate = dict(bound.get("backbone_kwargs", {})).get("drop_path_rate", 0.0)
  bindings = TINY_MODEL + [
      "build_model.backbone_kwargs = " + TINY_BACKBONE[_family(bound["backbone"])] % rate,
      f"build_model.pixel_decoder_dims = {(16,) + (8,) * (stages - 1)}",
      f"build_model.pixel_decoder_blocks = {(1,) * stages}",
  ]
  if bound.get("drop_query_keep_number", 0):  # drop query keeps K of the 8 queries
    bindings.append("build_model.drop_query_keep_number = 4")
  gin.clear_config()
  gin.parse_config_files_and_bindings([os.path.join(ROOT, path)], bindings,
                                      skip_unknown=True)
  num_classes = 5
  model = model_lib.build_model(num_classes=num_classes)
  images = np.random.default_rng(0).uniform(0, 255, (1, 65, 65, 3)).astype("float32")
  train = model(images, training=True)  # the trainer's first call
  infer = model(images, training=False)
  n = model.num_queries
  for out in (train, infer):
    assert tuple(out["class_logits"].shape) == (1, n, num_classes + 1)
    assert out["mask_logits"].shape[-1] == n
    assert np.isfinite(np.asarray(out["mask_logits"])).all()
  assert "semantic_logits" in train and "semantic_logits" not in infer
  assert len(train["aux_outputs"]) == len(infer["aux_outputs"])
