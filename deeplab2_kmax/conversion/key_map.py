"""Where each variable of a deeplab2 kMaX-DeepLab checkpoint goes in our model.

deeplab2 writes object-based checkpoints, `tf.train.Checkpoint(**model.checkpoint_items)`:
keys such as `encoder/_stage2/_block1/_conv1_bn_act/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE`.
`targets(key, shape)` maps one such key to the variable(s) of our model that take its
value, as paths relative to the model (`KMaXDeepLab` variable paths without the model's
own name, e.g. `resnet50/res2_block1/conv1/conv/kernel`), each with the reshaping that
turns deeplab2's layout into ours:

* Conv1D kernels `[1, Cin, Cout]` -> Dense kernels `[Cin, Cout]`;
* ConvNeXt's grouped 7x7 conv `[7, 7, 1, C]` -> DepthwiseConv2D `[7, 7, C, 1]`, its
  layer scale `[1, 1, 1, C]` -> `[C]`;
* the axial attention's stacked batch norms (`[3, 1, heads, 1, 1]` for the three
  similarity terms, `[2, 1, heads, 1, depth]` for the retrieved content and relative
  value) -> one batch norm per term, channels in heads-major order;
* the center self-attention's retrieved-value norm `[1, heads, 1, depth]` -> `[heads *
  depth]`.

Class-dependent heads (class logits, semantic logits) are mapped by `label_space`,
which knows the channel orders of both sides; `targets` only names them (see
`CLASS_HEAD_SUFFIX` / `SEMANTIC_HEAD_SUFFIX`).
"""

import re
from typing import Callable, List, Optional, Tuple

import numpy as np

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
CLASS_HEAD_SUFFIX = "class_head"
SEMANTIC_HEAD_SUFFIX = "semantic_branch/classifier"

Transform = Callable[[np.ndarray], np.ndarray]
Target = Tuple[str, Transform]

# Sub-module names inside blocks, shared by the backbones and the pixel decoder.
_BLOCK_PARTS = [
    (r"_conv1_bn_act", "conv1"), (r"_conv2_bn_act", "conv2"), (r"_conv3_bn", "conv3"),
    (r"_conv2_bn", "conv2"), (r"_shortcut", "shortcut"),
    (r"_attention/_height_axis", "attention/height_axis"),
    (r"_attention/_width_axis", "attention/width_axis"),
    (r"_conv", "conv"), (r"_batch_norm", "bn"),
]
# Modules of one kMaX transformer-decoder layer (deeplab2 `_block1_transformer`).
_DECODER_LAYER_PARTS = {
    "_memory_conv1_bn_act": "memory_conv1", "_pixel_conv1_bn_act": "pixel_conv1",
    "_memory_qkv_conv_bn": "memory_qkv", "_pixel_v_conv_bn": "pixel_projection",
    "_memory_conv3_bn": "memory_conv3", "_memory_ffn_conv1_bn_act": "ffn1",
    "_memory_ffn_conv2_bn": "ffn2",
    "_memory_attention/_batch_norm_similarity": "memory_attention/similarity_bn",
    "_memory_attention/_batch_norm_retrieved_value": "memory_attention/retrieved_bn",
    "_kmeans_memory_batch_norm_retrieved_value": "kmeans_update/retrieved_bn",
    "_kmeans_memory_conv3_bn": "kmeans_update/output_projection",
}
# The prediction head: top level for the final one, `_auxiliary_clustering_predictor/_`
# inside each decoder layer.
_HEAD_PARTS = {
    "pixel_space_head/conv_block/_conv1_bn_act/_depthwise/_depthwise_conv":
        "pixel_head/conv/depthwise",
    "pixel_space_head/conv_block/_conv1_bn_act/_depthwise/_batch_norm":
        "pixel_head/conv/depthwise_bn",
    "pixel_space_head/conv_block/_conv1_bn_act/_pointwise/_conv":
        "pixel_head/conv/pointwise/conv",
    "pixel_space_head/conv_block/_conv1_bn_act/_pointwise/_batch_norm":
        "pixel_head/conv/pointwise/bn",
    "pixel_space_head/final_conv": "pixel_head/projection",
    "pixel_space_feature_batch_norm": "pixel_head/bn",
    "pixel_space_mask_batch_norm": "mask_logits_bn",
    "transformer_class_head/_conv": CLASS_HEAD_SUFFIX,
    "transformer_mask_head/_conv": "mask_head/dense",
    "transformer_mask_head/_batch_norm": "mask_head/bn",
}
_SEMANTIC_PARTS = {
    "semantic_decoder/_aspp/_conv_bn_act": "aspp/conv1x1",
    "semantic_decoder/_aspp/_aspp_pool/_conv_bn_act": "aspp/pool_conv",
    "semantic_decoder/_aspp/_proj_conv_bn_act": "aspp/projection",
    "semantic_decoder/_low_level_conv1": "res3_projection",
    "semantic_decoder/_low_level_conv2": "res2_projection",
    "semantic_decoder/_fusion_conv1/_conv1_bn_act": "res3_fuse",
    "semantic_decoder/_fusion_conv2/_conv1_bn_act": "res2_fuse",
    "semantic_head_without_last_layer/_conv1_bn_act": "head_conv",
    "semantic_last_layer": "classifier",
}
_SEPARABLE_PARTS = {"_depthwise/_depthwise_conv": "depthwise",
                    "_depthwise/_batch_norm": "depthwise_bn",
                    "_pointwise/_conv": "pointwise/conv",
                    "_pointwise/_batch_norm": "pointwise/bn"}
ENCODER_PREFIXES = ("encoder/", "backbone/_encoder/")


def split_key(key: str) -> Tuple[str, str]:
  """'a/b/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE' -> ('a/b/_conv', 'kernel')."""
  body = key[:-len(SUFFIX)] if key.endswith(SUFFIX) else key
  module, _, name = body.rpartition("/")
  return module, name


def _same(value):
  return value


def _reshaped(shape):
  return lambda value: np.reshape(value, shape)


def _squeeze_conv1d(value):
  return value[0] if value.ndim == 3 and value.shape[0] == 1 else value


def _term(index, shape):
  return lambda value: np.reshape(value[index], shape)


def _block_path(module: str) -> Optional[str]:
  """`_conv1_bn_act/_conv` -> `conv1/conv` etc. for the inside of a residual block."""
  out = []
  rest = module
  while rest:
    for pattern, replacement in _BLOCK_PARTS:
      m = re.match(pattern + r"(/|$)", rest)
      if m:
        out.append(replacement)
        rest = rest[m.end():]
        break
    else:
      return None
  return "/".join(out)


def _axial_targets(path: str, module_rest: str, name: str, shape) -> Optional[List[Target]]:
  """Variables of one axial-attention layer (`.../height_axis` or `.../width_axis`)."""
  if module_rest == "" and name == "qkv_kernel":
    return [(f"{path}/qkv_kernel", _same)]
  m = re.fullmatch(r"_(query|key|value)_rpe", module_rest)
  if m and name == "embeddings":
    return [(f"{path}/{m.group(1)}_rpe", _same)]
  if module_rest == "_batch_norm_qkv":
    return [(f"{path}/qkv_bn/{name}", _same)]
  if module_rest == "_batch_norm_similarity":  # [terms, 1, heads, 1, 1]
    heads = shape[2]
    return [(f"{path}/similarity_bn_{i}/{name}", _term(i, (heads,)))
            for i in range(shape[0])]
  if module_rest == "_batch_norm_retrieved_output":  # [2, 1, heads, 1, depth]
    size = int(np.prod(shape[1:]))
    return [(f"{path}/content_bn/{name}", _term(0, (size,))),
            (f"{path}/value_rpe_bn/{name}", _term(1, (size,)))]
  return None


def _residual_block_targets(prefix: str, inner: str, name: str, shape):
  """A ResNet / axial block's variables; `inner` is the module path inside the block."""
  m = re.match(r"(_attention/_(?:height|width)_axis)(?:/(.*))?$", inner)
  if m:
    axis = _block_path(m.group(1))
    return _axial_targets(f"{prefix}/{axis}", m.group(2) or "", name, shape)
  path = _block_path(inner)
  return None if path is None else [(f"{prefix}/{path}/{name}", _same)]


def encoder_targets(module: str, name: str, shape, backbone: str) -> Optional[List[Target]]:
  """deeplab2 encoder module (without the `encoder/` prefix) -> our backbone layer."""
  m = re.fullmatch(r"_stem/(_conv|_batch_norm)", module)  # ResNet-50: 7x7 conv + BN
  if m:
    return [(f"{backbone}/stem/{_block_path(m.group(1))}/{name}", _same)]
  m = re.fullmatch(r"_stem/(_conv[123](?:_bn_act|_bn))/(_conv|_batch_norm)", module)
  if m:  # inception stem of MaX-S
    return [(f"{backbone}/stem/{_block_path(m.group(1))}/{_block_path(m.group(2))}/{name}",
             _same)]
  m = re.fullmatch(r"_stage(\d)/_block(\d+)/(.+)", module)
  if m:
    prefix = f"{backbone}/res{m.group(1)}_block{m.group(2)}"
    return _residual_block_targets(prefix, m.group(3), name, shape)
  return _convnext_targets(module, name, shape, backbone)


def _convnext_targets(module: str, name: str, shape, backbone: str):
  m = re.fullmatch(r"downsample_layers/(\d)/layer_with_weights-(\d)", module)
  if m:
    stage, position = int(m.group(1)), int(m.group(2))
    if stage == 0:  # patchify stem: conv, then LayerNorm
      return [(f"{backbone}/{('stem_conv', 'stem_norm')[position]}/{name}", _same)]
    part = ("norm", "conv")[position]  # LayerNorm, then the 2x2 stride-2 conv
    return [(f"{backbone}/downsample{stage}_{part}/{name}", _same)]
  m = re.fullmatch(r"stages/(\d)/layer_with_weights-(\d+)(?:/(\w+))?", module)
  if m:
    block = f"{backbone}/stage{int(m.group(1)) + 2}_block{int(m.group(2)) + 1}"
    part = m.group(3)
    if part is None and name == "layer_scale":
      return [(f"{block}/layer_scale", _reshaped((shape[-1],)))]
    if part == "depthwise_conv" and name == "kernel":  # grouped conv -> depthwise
      return [(f"{block}/depthwise_conv/kernel", lambda v: np.transpose(v, (0, 1, 3, 2)))]
    if part in ("depthwise_conv", "norm", "pointwise_conv1", "pointwise_conv2"):
      return [(f"{block}/{part}/{name}", _same)]
  return None


def _pixel_decoder_targets(module: str, name: str, shape, stage_blocks):
  m = re.fullmatch(r"_backbone_norms/(\d)", module)
  if m:
    endpoint = ("res5", "res4", "res3", "res2", "stem")[int(m.group(1))]
    return [(f"pixel_decoder/{endpoint}_norm/{name}", _same)]
  m = re.fullmatch(r"_skip_connections/(\d)/_resized_conv_bn([12])/(_conv|_batch_norm)",
                   module)
  if m:
    part = ("decoder_conv", "skip_conv")[int(m.group(2)) - 1]
    return [(f"pixel_decoder/fuse{m.group(1)}/{part}/{_block_path(m.group(3))}/{name}",
             _same)]
  m = re.fullmatch(r"_stages/(\d)/_block(\d+)/(.+)", module)
  if m:
    stage = int(m.group(1))
    if stage >= len(stage_blocks):
      return None
    prefix = f"pixel_decoder/stage{stage}_{stage_blocks[stage]}{int(m.group(2)) - 1}"
    return _residual_block_targets(prefix, m.group(3), name, shape)
  return None


def _dense(path: str, name: str) -> List[Target]:
  return [(f"{path}/{name}", _squeeze_conv1d if name == "kernel" else _same)]


def _attention_bn(path: str, name: str, shape) -> List[Target]:
  return [(f"{path}/{name}", _reshaped((int(np.prod(shape)),)))]


def _head_targets(module: str, name: str, prefix: str, shape):
  """One prediction head (`module` relative to the head)."""
  for theirs, ours in _HEAD_PARTS.items():
    if module == theirs:
      if ours in (CLASS_HEAD_SUFFIX, "mask_head/dense"):
        return _dense(f"{prefix}{ours}", name)
      return [(f"{prefix}{ours}/{name}", _same)]
  return None


def _decoder_layer_targets(module: str, name: str, shape, layer: str):
  m = re.fullmatch(r"_auxiliary_clustering_predictor/_(.+)", module)
  if m:
    return _head_targets(m.group(1), name, f"{layer}/prediction_head/", shape)
  for theirs, ours in _DECODER_LAYER_PARTS.items():
    if module == theirs:
      if ours.endswith("_bn"):  # a bare batch norm (attention / k-means update)
        return _attention_bn(f"{layer}/{ours}", name, shape)
    elif module.startswith(theirs + "/"):
      part = _block_path(module[len(theirs) + 1:])
      return (_dense(f"{layer}/{ours}/dense", name) if part == "conv"
              else [(f"{layer}/{ours}/{part}/{name}", _same)])
  return None


def _transformer_decoder_targets(module: str, name: str, shape, layer_names):
  if module == "" and name == "cluster_centers":
    return [("transformer_decoder/cluster_centers", _same)]
  m = re.fullmatch(r"_(class|mask)_embedding_projection/(_conv|_batch_norm)", module)
  if m:
    path = f"transformer_decoder/{m.group(1)}_embedding_projection"
    return (_dense(f"{path}/dense", name) if m.group(2) == "_conv"
            else [(f"{path}/bn/{name}", _same)])
  m = re.fullmatch(r"_kmax_decoder/(\d+)/_block1_transformer/(.+)", module)
  if m and int(m.group(1)) < len(layer_names):
    layer = f"transformer_decoder/{layer_names[int(m.group(1))]}"
    return _decoder_layer_targets(m.group(2), name, shape, layer)
  return None


def _semantic_targets(module: str, name: str):
  m = re.fullmatch(r"semantic_decoder/_aspp/_aspp_conv([123])/_conv_bn_act/(_conv|_batch_norm)",
                   module)
  if m:  # rates in config order (6, 12, 18)
    return [(f"semantic_branch/aspp/atrous{{rate{m.group(1)}}}/{_block_path(m.group(2))}"
             f"/{name}", _same)]
  for theirs, ours in _SEMANTIC_PARTS.items():
    if module == theirs:
      return [(f"semantic_branch/{ours}/{name}", _same)]
    if module.startswith(theirs + "/"):
      rest = module[len(theirs) + 1:]
      part = _SEPARABLE_PARTS.get(rest) or _block_path(rest)
      if part is not None:
        return [(f"semantic_branch/{ours}/{part}/{name}", _same)]
  return None


def targets(key: str, shape, backbone: str, stage_blocks, layer_names,
            aspp_rates=(6, 12, 18)) -> Optional[List[Target]]:
  """Our variable path(s) for deeplab2 checkpoint `key` (None: no such place in ours).

  Args:
    key: the deeplab2 checkpoint key.
    shape: its shape.
    backbone: our backbone layer's name (the first path component of its variables).
    stage_blocks: block kind per pixel-decoder stage ("axial" / "bottleneck").
    layer_names: our transformer-decoder layer names, in deeplab2's `_kmax_decoder`
      order.
    aspp_rates: the semantic branch's atrous rates (its layer names carry them).
  """
  found = _targets(key, shape, backbone, stage_blocks, layer_names, aspp_rates)
  if not found:
    return None
  # Keras' DepthwiseConv2D calls its kernel `kernel`, tf.keras 2's `depthwise_kernel`.
  return [(re.sub(r"/depthwise_kernel$", "/kernel", path), fn) for path, fn in found]


def _targets(key, shape, backbone, stage_blocks, layer_names, aspp_rates):
  module, name = split_key(key)
  shape = [int(s) for s in shape]
  for prefix in ENCODER_PREFIXES:
    if module.startswith(prefix):
      return encoder_targets(module[len(prefix):], name, shape, backbone)
  if module.startswith("pixel_decoder/"):
    return _pixel_decoder_targets(module[len("pixel_decoder/"):], name, shape,
                                  stage_blocks)
  if module == "transformer_decoder" or module.startswith("transformer_decoder/"):
    return _transformer_decoder_targets(module[len("transformer_decoder/"):], name,
                                        shape, layer_names)
  if module.startswith(("semantic_decoder/", "semantic_head_without_last_layer/")) or (
      module == "semantic_last_layer"):
    found = _semantic_targets(module, name)
    if found:
      rates = {f"{{rate{i + 1}}}": str(r) for i, r in enumerate(aspp_rates)}
      found = [(_fill(path, rates), fn) for path, fn in found]
    return found
  head = _head_targets(module, name, "prediction_head/", shape)
  if head is not None:
    return head
  # A bare ConvNeXt ImageNet checkpoint (Keras `save_weights` of the encoder alone).
  return _convnext_targets(module, name, shape, backbone)


def _fill(path: str, values) -> str:
  for placeholder, value in values.items():
    path = path.replace(placeholder, value)
  return path
