"""Every gin config under configs/coco, configs/cityscapes and configs/ade20k parses
strictly, binds only real constructor arguments, and encodes the paper's / deeplab2's
settings."""

import glob
import inspect
import os
import re

import gin
import numpy as np
import pytest

from deeplab2_kmax.app import configs
from deeplab2_kmax import backbones
from deeplab2_kmax.backbones import axial_resnet
from deeplab2_kmax.backbones import convnext
from deeplab2_kmax.backbones import resnet
from deeplab2_kmax import model as model_lib
from deeplab2_kmax.tools import model_stats

ROOT = configs.REPO_ROOT
MODEL_CONFIGS = sorted(model_stats.PAPER_TARGETS)
SHARED_FILES = {"configs/coco/base.gin", "configs/coco/recipe.gin",
                "configs/coco/ablations/recipe.gin", "configs/cityscapes/base.gin",
                "configs/cityscapes/recipe.gin", "configs/coco/recipe_drop_query.gin",
                "configs/ade20k/base.gin", "configs/ade20k/recipe.gin",
                "configs/ade20k/recipe_res1281.gin"}
BACKBONE_CLASSES = {"resnet50": resnet.ResNet, "axial_resnet50": axial_resnet.AxialResNet,
                    **{name: convnext.ConvNeXt for name in convnext.CONVNEXT_PRESETS}}


def _parse(*paths, bindings=()):
  configs.parse_config([os.path.join(ROOT, p) for p in paths], bindings, clear=True)
  return gin.get_bindings("build_model")


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _arg_names(cls):
  return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def test_every_config_file_is_known():
  found = {os.path.relpath(p, ROOT) for pattern in
           ("configs/coco/*.gin", "configs/coco/ablations/*.gin", "configs/cityscapes/*.gin",
            "configs/ade20k/*.gin")
           for p in glob.glob(os.path.join(ROOT, pattern))}
  assert found == set(MODEL_CONFIGS) | SHARED_FILES


@pytest.mark.parametrize("path", MODEL_CONFIGS)
def test_model_config_binds_only_real_arguments(path):
  bound = _parse(path)
  unknown = set(bound) - _arg_names(model_lib.KMaXDeepLab)
  assert not unknown, f"{path}: build_model has no argument(s) {sorted(unknown)}"
  backbone = backbones.canonical_name(bound["backbone"])
  unknown = set(bound["backbone_kwargs"]) - _arg_names(BACKBONE_CLASSES[backbone]) - {
      "norm_config", "drop_path_rate"}
  assert not unknown, f"{path}: {backbone} has no argument(s) {sorted(unknown)}"
  assert bound["pixel_decoder_block_types"][:2] == ("axial", "axial")
  assert len(bound["pixel_decoder_dims"]) == len(bound["pixel_decoder_blocks"])


def test_unknown_configurable_or_typo_fails(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("include 'configs/coco/kmax_r50.gin'\nbuild_modle.num_queries = 3\n")
  with pytest.raises(ValueError, match="build_modle"):
    _parse(str(bad))
  typo = tmp_path / "typo.gin"
  typo.write_text("include 'configs/coco/kmax_r50.gin'\nbuild_model.num_querys = 3\n")
  bound = _parse(str(typo))
  assert set(bound) - _arg_names(model_lib.KMaXDeepLab) == {"num_querys"}


EXPECTED = {
    # path: (backbone, drop path, queries, decoder layers, interaction, classes)
    "configs/coco/kmax_r50.gin": ("resnet50", 0.0, 128, (2, 2, 2), "kmeans_cross_attention", 133),
    "configs/coco/kmax_maxs.gin": ("axial_resnet50", 0.2, 128, (2, 2, 2), "kmeans_cross_attention", 133),
    "configs/coco/kmax_convnext_tiny.gin": ("convnext_tiny", 0.3, 128, (2, 2, 2), "kmeans_cross_attention", 133),
    "configs/coco/kmax_convnext_small.gin": ("convnext_small", 0.4, 128, (2, 2, 2), "kmeans_cross_attention", 133),
    "configs/coco/kmax_convnext_base.gin": ("convnext_base", 0.5, 128, (2, 2, 2), "kmeans_cross_attention", 133),
    "configs/coco/kmax_convnext_large.gin": ("convnext_large", 0.6, 128, (2, 2, 2), "kmeans_cross_attention", 133),
    "configs/coco/kmax_convnext_large_q256.gin": ("convnext_large", 0.6, 256, (2, 2, 2), "kmeans_cross_attention", 133),
    "configs/coco/ablations/r50_cross_attention.gin": ("resnet50", 0.0, 128, (2, 2, 2), "cross_attention", 133),
    "configs/coco/ablations/maxs_dual_path_kmeans_cross_attention.gin": ("axial_resnet50", 0.2, 128, (2, 2, 2), "dual_path_kmeans_cross_attention", 133),
    "configs/coco/ablations/r50_decoders_333.gin": ("resnet50", 0.0, 128, (3, 3, 3), "kmeans_cross_attention", 133),
    "configs/coco/ablations/maxs_decoders_111.gin": ("axial_resnet50", 0.2, 128, (1, 1, 1), "kmeans_cross_attention", 133),
    "configs/cityscapes/kmax_r50.gin": ("resnet50", 0.0, 256, (2, 2, 2), "kmeans_cross_attention", 19),
    "configs/cityscapes/kmax_convnext_large.gin": ("convnext_large", 0.6, 256, (2, 2, 2), "kmeans_cross_attention", 19),
    # deeplab2 Cityscapes drop_path_keep_prob: MaX-S 0.8, ConvNeXt T/S/B 0.8/0.7/0.6.
    "configs/cityscapes/kmax_maxs.gin": ("axial_resnet50", 0.2, 256, (2, 2, 2), "kmeans_cross_attention", 19),
    "configs/cityscapes/kmax_convnext_tiny.gin": ("convnext_tiny", 0.2, 256, (2, 2, 2), "kmeans_cross_attention", 19),
    "configs/cityscapes/kmax_convnext_small.gin": ("convnext_small", 0.3, 256, (2, 2, 2), "kmeans_cross_attention", 19),
    "configs/cityscapes/kmax_convnext_base.gin": ("convnext_base", 0.4, 256, (2, 2, 2), "kmeans_cross_attention", 19),
    # deeplab2 ADE20K drop_path_keep_prob: R50 1.0, ConvNeXt-L 0.3.
    "configs/ade20k/kmax_r50.gin": ("resnet50", 0.0, 128, (2, 2, 2), "kmeans_cross_attention", 150),
    "configs/ade20k/kmax_r50_res1281.gin": ("resnet50", 0.0, 128, (2, 2, 2), "kmeans_cross_attention", 150),
    "configs/ade20k/kmax_convnext_large.gin": ("convnext_large", 0.7, 128, (2, 2, 2), "kmeans_cross_attention", 150),
    "configs/ade20k/kmax_convnext_large_res1281.gin": ("convnext_large", 0.7, 128, (2, 2, 2), "kmeans_cross_attention", 150),
}


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_model_config_values(path):
  bound = _parse(path)
  got = (bound["backbone"], bound["backbone_kwargs"]["drop_path_rate"], bound["num_queries"],
         bound["decoder_layers"], bound["interaction"], bound["num_classes"])
  assert got == EXPECTED[path]


def test_ablation_names_match_their_bindings():
  for path in MODEL_CONFIGS:
    name = os.path.basename(path)[:-4]
    if "/ablations/" not in path:
      continue
    bound = _parse(path)
    backbone = "resnet50" if name.startswith("r50_") else "axial_resnet50"
    assert bound["backbone"] == backbone, path
    if "_decoders_" in name:
      n = int(name[-1])
      assert bound["decoder_layers"] == (n, n, n), path
    else:
      assert bound["interaction"] == name.split("_", 1)[1], path


def test_cityscapes_post_processing_and_decoder():
  _parse("configs/cityscapes/kmax_convnext_large.gin")
  merger = gin.get_bindings("MaskWiseMerger")
  assert (merger["thing_threshold"], merger["stuff_threshold"],
          merger["overlap_threshold"], merger["thing_area_limit"],
          merger["stuff_area_limit"]) == (0.5, 0.3, 0.9, 256, 2048)
  bound = gin.get_bindings("build_model")
  assert bound["pixel_decoder_dims"] == (512, 256, 128, 64, 32)
  assert not bound["use_semantic_decoder"]
  # COCO uses MaskWiseMerger's defaults (not bound, so model-only callers need not
  # import post_processing).
  _parse("configs/coco/kmax_r50.gin")
  assert not gin.get_bindings("MaskWiseMerger")
  from deeplab2_kmax import post_processing  # pylint: disable=g-import-not-at-top
  defaults = inspect.signature(post_processing.MaskWiseMerger.__init__).parameters
  assert (defaults["thing_threshold"].default, defaults["stuff_threshold"].default,
          defaults["overlap_threshold"].default, defaults["thing_area_limit"].default,
          defaults["stuff_area_limit"].default) == (0.7, 0.5, 0.8, 400, 6400)


@pytest.mark.parametrize("path", [p for p in MODEL_CONFIGS if p.startswith("configs/ade20k/")])
def test_ade20k_post_processing_and_decoder(path):
  _parse(path)
  merger = gin.get_bindings("MaskWiseMerger")
  # deeplab2's ADE20K evaluator_options, identical in its four configs.
  assert merger == {"thing_threshold": 0.4, "stuff_threshold": 0.4, "pixel_confidence": 0.4,
                    "overlap_threshold": 0.8, "thing_area_limit": 0, "stuff_area_limit": 0,
                    "reorder_class_weight": 1.0, "reorder_mask_weight": 1.0}
  bound = gin.get_bindings("build_model")
  assert bound["pixel_decoder_dims"] == (512, 256, 128, 64)
  assert bound["use_semantic_decoder"] and bound["decoder_drop_path_rate"] == 0.0
  # The 1281 configs are the 641 networks (only the recipe differs).
  if path.endswith("_res1281.gin"):
    assert bound == _parse(path.replace("_res1281", ""))


@pytest.mark.parametrize("dataset,steps,lr,batch,crop,scales", [
    ("coco", 150000, 5e-4, 64, (1281, 1281), (0.3, 1.7)),
    ("cityscapes", 60000, 3e-4, 32, (1025, 2049), (0.5, 2.0)),
    ("ade20k", 100000, 5e-4, 64, (641, 641), (0.5, 2.0))])
def test_recipes_parse_with_the_trainer_configurables(dataset, steps, lr, batch, crop,
                                                      scales):
  # pylint: disable=g-import-not-at-top,unused-import
  from data import input_pipeline
  from deeplab2_kmax.losses import kmax_loss
  from trainer import optimizer
  from trainer import train_lib
  model_config = f"configs/{dataset}/kmax_r50.gin"
  _parse(model_config, f"configs/{dataset}/recipe.gin")
  opt = gin.get_bindings("build_optimizer")
  assert (opt["total_steps"], opt["base_learning_rate"], opt["warmup_steps"],
          opt["backbone_multiplier"], opt["weight_decay"]) == (steps, lr, 5000, 0.1, 0.05)
  data = gin.get_bindings("build_dataset")
  assert (data["batch_size"], data["crop_size"], data["min_scale"],
          data["max_scale"]) == (batch, crop, *scales)
  loss = gin.get_bindings("KMaXLoss")
  assert (loss["pq_style_weight"], loss["mask_id_weight"]) == (3.0, 0.3)
  if dataset == "coco":
    _parse(model_config, "configs/coco/ablations/recipe.gin")
    assert gin.query_parameter("%TRAIN_STEPS") == 100000
    _parse("configs/coco/kmax_convnext_large_q256.gin", "configs/coco/recipe_drop_query.gin")
    assert gin.query_parameter("KMaXLoss.pq_style_weight") == 6.0
    assert gin.query_parameter("build_model.drop_query_keep_number") == 128
    assert gin.query_parameter("%TRAIN_STEPS") == steps
  if dataset == "ade20k":
    assert (loss["instance_discrimination_sample_k"], data["max_segments"]) == (1024, 128)
    assert "semantic_top_k_percent" not in loss and "small_instance_weight" not in data
    _parse("configs/ade20k/kmax_convnext_large_res1281.gin", "configs/ade20k/recipe_res1281.gin")
    assert gin.query_parameter("build_dataset.crop_size") == (1281, 1281)
    assert gin.query_parameter("KMaXLoss.instance_discrimination_sample_k") == 4096
    assert gin.query_parameter("%TRAIN_STEPS") == steps


def test_tiny_variant_of_each_meta_config_builds():
  tiny = ['build_model.num_queries = 8', 'build_model.pixel_decoder_blocks = (1, 1, 1, 1)',
          'build_model.axial_num_heads = 2', 'build_model.decoder_channels = 16',
          'build_model.decoder_key_depth = 8', 'build_model.decoder_value_depth = 16',
          'build_model.decoder_num_heads = 2', 'build_model.ffn_channels = 16',
          'build_model.embedding_dim = 8', 'build_model.pixel_head_channels = 16',
          'build_model.semantic_channels = 8',
          'build_model.semantic_low_level_channels = (8, 8)',
          'build_model.backbone_kwargs = {"depths": (1, 1, 1, 1), '
          '"width_multiplier": 0.125, "stem_width_multiplier": 0.25}']
  for path, dims in [("configs/coco/ablations/r50_decoders_111.gin", (16, 8, 8, 8)),
                     ("configs/cityscapes/kmax_r50.gin", (16, 8, 8, 8, 8))]:
    _parse(path, bindings=tiny + [f"build_model.pixel_decoder_dims = {dims}"] + (
        ["build_model.pixel_decoder_blocks = (1, 1, 1, 1, 1)"] if len(dims) == 5 else []))
    model = model_lib.build_model(num_classes=3)
    out = model(np.zeros((1, 65, 65, 3), "float32"), training=False)
    stride = 4 if len(dims) == 4 else 2
    assert tuple(out["mask_logits"].shape) == (1, 64 // stride + 1, 64 // stride + 1, 8)
    assert tuple(out["class_logits"].shape) == (1, 8, 4)



@pytest.mark.parametrize("path,stride", [("configs/cityscapes/kmax_maxs.gin", 2),
                                         ("configs/cityscapes/kmax_convnext_tiny.gin", 4),
                                         ("configs/ade20k/kmax_r50.gin", 4)])
def test_output_stride_and_class_count_of_added_configs(path, stride):
  """MaX-S's stride-2 stem feeds the fifth Cityscapes stage (ConvNeXt has none); ADE20K's
  heads have 150 classes + void. (every_config_builds_test.py runs every config.)"""
  bound = _parse(path)
  kwargs = {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)} if "convnext" in path else {
      "depths": (1, 1, 1, 1), "width_multiplier": 0.125, "stem_width_multiplier": 0.25}
  stages = len(bound["pixel_decoder_dims"])
  _parse(path, bindings=[
      "build_model.num_queries = 8",
      f"build_model.pixel_decoder_dims = {(16,) + (8,) * (stages - 1)}",
      f"build_model.pixel_decoder_blocks = {(1,) * stages}", "build_model.axial_num_heads = 2",
      "build_model.decoder_channels = 16", "build_model.decoder_key_depth = 8",
      "build_model.decoder_value_depth = 16", "build_model.decoder_num_heads = 2",
      "build_model.ffn_channels = 16", "build_model.embedding_dim = 8",
      "build_model.pixel_head_channels = 16", "build_model.semantic_channels = 8",
      "build_model.semantic_low_level_channels = (8, 8)",
      f"build_model.backbone_kwargs = {kwargs!r}"])
  model = model_lib.build_model(num_classes=bound["num_classes"])
  out = model(np.zeros((1, 65, 65, 3), "float32"), training=False)
  assert model.output_stride == stride
  assert tuple(out["mask_logits"].shape) == (1, 64 // stride + 1, 64 // stride + 1, 8)
  assert tuple(out["class_logits"].shape) == (1, 8, bound["num_classes"] + 1)


IMAGENET = {"resnet50": "resnet50_imagenet1k", "axial_resnet50": "maxs_gelu_imagenet_22k_1k_224",
            **{f"convnext_{s}": f"convnext_{s}_imagenet_22k_1k_384"
               for s in ("tiny", "small", "base", "large")}}
RECIPES = {"coco": "configs/coco/recipe.gin", "cityscapes": "configs/cityscapes/recipe.gin",
           "ade20k": "configs/ade20k/recipe.gin"}


@pytest.mark.parametrize("path", [p for p in MODEL_CONFIGS if "/ablations/" not in p])
def test_recipe_names_the_imagenet_checkpoint_of_the_backbone(path):
  """Each model config names the ImageNet backbone the paper's recipe starts from, and
  its dataset's recipe binds Trainer.init_checkpoint to it (None until a user points
  it at the download)."""
  # pylint: disable=g-import-not-at-top,unused-import
  from data import input_pipeline
  from deeplab2_kmax.losses import kmax_loss
  from trainer import optimizer
  from trainer import train_lib
  bound = _parse(path, RECIPES[path.split("/")[1]])
  text = _text_with_includes(path)
  assert IMAGENET[backbones.canonical_name(bound["backbone"])] + ".tar.gz" in text
  assert str(gin.query_parameter("Trainer.init_checkpoint")) == "%IMAGENET_CHECKPOINT"
  assert gin.query_parameter("%IMAGENET_CHECKPOINT") is None
  _parse(path, RECIPES[path.split("/")[1]],
         bindings=['IMAGENET_CHECKPOINT = "/data/backbone.tar.gz"'])
  assert gin.query_parameter("%IMAGENET_CHECKPOINT") == "/data/backbone.tar.gz"


def _text_with_includes(path):
  with open(os.path.join(ROOT, path)) as f:
    text = f.read()
  for included in re.findall(r"^include '([^']+)'", text, re.M):
    text += _text_with_includes(included)
  return text
