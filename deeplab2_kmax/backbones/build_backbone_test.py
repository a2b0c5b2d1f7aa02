"""Tests of `build_backbone`: names, aliases, overrides and gin bindings."""

import gin
import numpy as np
import pytest

from deeplab2_kmax import backbones
from deeplab2_kmax.backbones import axial_resnet
from deeplab2_kmax.backbones import convnext
from deeplab2_kmax.backbones import resnet


@pytest.mark.parametrize("name,cls", [
    ("resnet50", resnet.ResNet), ("resnet", resnet.ResNet),
    ("kmax_resnet50", resnet.ResNet), ("axial_resnet50", axial_resnet.AxialResNet),
    ("max_s", axial_resnet.AxialResNet), ("convnext_tiny", convnext.ConvNeXt),
    ("kmax_convnext_large", convnext.ConvNeXt)])
def test_names_map_to_classes(name, cls):
  assert type(backbones.build_backbone(name)) is cls  # pylint: disable=unidiomatic-typecheck


def test_presets_and_overrides():
  large = backbones.build_backbone("convnext_large")
  assert large.dims == (192, 384, 768, 1536) and large.depths == (3, 3, 27, 3)
  tiny = backbones.build_backbone("convnext_base", depths=(1, 1, 1, 1),
                                  dims=(8, 16, 32, 64), drop_path_rate=0.5)
  assert tiny.dims == (8, 16, 32, 64) and tiny.drop_path_rate == 0.5
  maxs = backbones.build_backbone("axial_resnet50")
  assert maxs.stem_type == "inception" and maxs.activation == "gelu"
  r50 = backbones.build_backbone("resnet50")
  assert r50.stem_type == "conv7" and r50.activation == "relu"


def test_every_backbone_gives_strided_endpoints():
  x = np.zeros((1, 65, 65, 3), "float32")
  tiny = {"resnet50": dict(depths=(1, 1, 1, 1), width_multiplier=0.125,
                           stem_width_multiplier=0.25),
          "axial_resnet50": dict(depths=(1, 1, 2, 1), width_multiplier=0.125,
                                 stem_width_multiplier=0.25),
          "convnext_tiny": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))}
  for name, kwargs in tiny.items():
    out = backbones.build_backbone(name, **kwargs)(x)
    sides = [out[f"res{i}"].shape[1] for i in range(2, 6)]
    assert sides == [17, 9, 5, 3], name


def test_gin_binds_build_backbone_kwargs():
  gin.clear_config()
  try:
    gin.parse_config("build_backbone.drop_path_rate = 0.3")
    model = backbones.build_backbone("convnext_small")
    assert model.drop_path_rate == 0.3
  finally:
    gin.clear_config()


def test_unknown_name_raises():
  with pytest.raises(ValueError, match="Unknown backbone 'vit'"):
    backbones.build_backbone("vit")
