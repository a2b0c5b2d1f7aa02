"""Backbones (pixel encoders) of kMaX-DeepLab, built by name.

`build_backbone(name, **kwargs)` returns a Keras layer; `backbone(x, training=...)`
(x already normalized to [-1, 1] by the model) returns a dict with "res2".."res5" at
strides 4/8/16/32 (activated features), "stage2".."stage5" (the same features before the
last activation, what deeplab2's kMaX pixel decoder consumes), "stage1" (stem output) and,
for the ResNets, "stem" (activated stem output, stride 2).

| name | class | params (trainable) |
|---|---|---|
| `resnet50` (alias `resnet`) | `ResNet` (7×7 stem, ReLU) | 23.51M |
| `axial_resnet50` (alias `max_s`) | `AxialResNet` (inception stem, GeLU, axial blocks at stride ≥ 16) | 41.34M |
| `convnext_tiny` / `_small` / `_base` / `_large` (alias `convnext` = tiny) | `ConvNeXt` | 27.82M / 49.45M / 87.56M / 196.23M |

deeplab2 names with the "kmax_" prefix (e.g. "kmax_resnet50") are accepted too.
Keyword arguments override the preset, e.g. a tiny CPU-test network:
`build_backbone("resnet50", depths=(1, 1, 1, 1), width_multiplier=0.125,
stem_width_multiplier=0.25)` or `build_backbone("convnext_tiny", depths=(1, 1, 1, 1),
dims=(8, 16, 32, 64))`. Common knobs: `drop_path_rate` (all), `norm_config` (ResNets,
see `layers.normalization`).

`build_backbone` is gin-configurable: bind its keyword arguments with
`build_backbone.drop_path_rate = 0.3` etc.
"""

import gin

from deeplab2_kmax.backbones.axial_resnet import AxialResNet
from deeplab2_kmax.backbones.convnext import CONVNEXT_PRESETS
from deeplab2_kmax.backbones.convnext import ConvNeXt
from deeplab2_kmax.backbones.resnet import ResNet

_ALIASES = {"resnet": "resnet50", "max_s": "axial_resnet50",
            "convnext": "convnext_tiny"}

BACKBONE_NAMES = ("resnet50", "axial_resnet50") + tuple(CONVNEXT_PRESETS)


def canonical_name(name: str) -> str:
  """Maps aliases and deeplab2 'kmax_' names to one of BACKBONE_NAMES."""
  key = name.lower()
  if key.startswith("kmax_"):
    key = key[len("kmax_"):]
  key = _ALIASES.get(key, key)
  if key not in BACKBONE_NAMES:
    raise ValueError(f"Unknown backbone {name!r}; known: {', '.join(BACKBONE_NAMES)} "
                     f"(aliases: {', '.join(_ALIASES)})")
  return key


@gin.configurable
def build_backbone(name: str, **kwargs):
  """Builds a backbone layer by name; kwargs override the preset's constructor args."""
  key = canonical_name(name)
  kwargs.setdefault("name", key)
  if key == "resnet50":
    return ResNet(**kwargs)
  if key == "axial_resnet50":
    return AxialResNet(**kwargs)
  config = dict(CONVNEXT_PRESETS[key])
  config.update(kwargs)
  return ConvNeXt(**config)
