"""kMaX-DeepLab (k-means Mask Transformer) for panoptic segmentation, TensorFlow/Keras 3.

The public API, importable from the package itself:

  import deeplab2_kmax as kmax
  kmax.parse_config(["configs/coco/kmax_r50.gin"])      # includes resolve from the repo
  model = kmax.build_model(num_classes=133)
  kmax.restore_model(model, "model_dir")                 # newest readable ckpt-N (or a prefix)
  predictor = kmax.load_predictor(["configs/coco/kmax_r50.gin"], [], "model_dir",
                                  "tfrecords/dataset_info.json")
  maps = predictor.predict_image(image)                 # uint8 [h, w, 3] -> panoptic, ...

Names resolve on first use, so importing a submodule (for example the data
converters' `deeplab2_kmax.core`) does not load TensorFlow.
"""

import importlib

# public name -> module defining it
_EXPORTS = {
    "build_model": "deeplab2_kmax.model",
    "MaskWiseMerger": "deeplab2_kmax.post_processing",
    "parse_config": "deeplab2_kmax.app.configs",
    "restore_model": "deeplab2_kmax.app.checkpoints",
    "resolve_checkpoint": "deeplab2_kmax.app.checkpoints",
    "PanopticPredictor": "deeplab2_kmax.app.predictor",
    "load_predictor": "deeplab2_kmax.app.predictor",
    "export_saved_model": "deeplab2_kmax.app.saved_model",
    "DatasetInfo": "deeplab2_kmax.core.dataset_info",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'deeplab2_kmax' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value  # later lookups skip this function
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
