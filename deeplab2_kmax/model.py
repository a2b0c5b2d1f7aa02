"""kMaX-DeepLab: backbone → pixel decoder → kMaX transformer decoder → heads.

`build_model(num_classes, ...)` is the gin entry point (configs bind `build_model.*`).
Output dict of `model(images, training=...)` (images float32 [B, H, W, 3] in [0, 255];
the model normalizes x / 127.5 - 1), s = the pixel decoder's finest stride (4; 2 with
the five-stage Cityscapes decoder), Hs = ceil(H / s) for `32k + 1` inputs:

  "class_logits"        [B, N, C+1]  (void last)
  "mask_logits"         [B, Hs, Ws, N]
  "pixel_embeddings"    [B, Hs, Ws, D]  L2-normalized
  "semantic_logits"     [B, H/4, W/4, C]  only when training=True
  "aux_outputs"         one dict per k-means decoder layer with class_logits,
                        mask_logits and pixel_embeddings; in training resized (align
                        corners) to the final [Hs, Ws] for the losses, at inference
                        left at the layer's own resolution (deeplab2 resizes them in
                        training only and drops them from its inference outputs;
                        resizing six [Hs, Ws, N] maps costs ~8% of an R50 forward)
  "cluster_assignments" one int32 [B, h_l, w_l] argmax map per k-means decoder layer

Tiny CPU configuration (what tests use): `build_model(num_classes, backbone="resnet50",
backbone_kwargs=layers.test_utils.TINY_RESNET_KWARGS, **layers.test_utils.TINY_MODEL_KWARGS)`
(the same architecture with small widths). In gin bind the same names;
configs/synthetic/kmax_tiny.gin does so with somewhat larger widths for the demo.
"""

from typing import Any, Mapping, Optional, Sequence, Union

import gin
import keras
from keras import ops

from deeplab2_kmax import backbones
from deeplab2_kmax import heads
from deeplab2_kmax.core import output_keys
from deeplab2_kmax.layers import normalization
from deeplab2_kmax.layers import policy_sharing
from deeplab2_kmax.layers import resize
from deeplab2_kmax.layers import tracking
from deeplab2_kmax import pixel_decoder as pixel_decoder_lib
from deeplab2_kmax import semantic_decoder as semantic_decoder_lib
from deeplab2_kmax import transformer_decoder as transformer_decoder_lib

_RESIZED_AUX_KEYS = (output_keys.MASK_LOGITS, output_keys.PIXEL_EMBEDDINGS)


@keras.saving.register_keras_serializable(package="deeplab2_kmax")
class KMaXDeepLab(keras.Model):
  """The kMaX-DeepLab panoptic model (see the module docstring for the outputs).

  Args:
    num_classes: C real classes.
    backbone: a backbone name for `backbones.build_backbone`, or any Keras layer whose
      call(x, training) returns {"res2".."res5"} (optionally "stage1".."stage5",
      "stem"). As in deeplab2, the pixel decoder and the semantic branch's stride-32
      input use the pre-activation "stage*" features when present, else "res*"
      (see pixel_decoder.select_endpoint / semantic_decoder.semantic_feature); an
      optional `stage1_stride` attribute (2, or 4 for ConvNeXt) sets the five-stage
      decoder's output stride.
    backbone_kwargs: keyword arguments for `build_backbone` (name backbones only).
    num_queries: N cluster centers (128 COCO, 256 Cityscapes).
    pixel_decoder_dims / pixel_decoder_blocks / pixel_decoder_block_types: pixel
      decoder stages from stride 32 ((512, 256, 128, 64), (1, 5, 1, 1),
      axial/axial/bottleneck/bottleneck); five entries add the stride-2 stage.
    axial_num_heads: heads of the pixel decoder's axial attention (8).
    pixel_decoder_dilation_rate: atrous rate of the pixel decoder's bottleneck 3×3
      convs (2, as deeplab2; see pixel_decoder).
    decoder_layers: kMaX decoder layers on strides 32/16/8 ((2, 2, 2)).
    interaction: "kmeans_cross_attention" (default), "cross_attention",
      "dual_path_cross_attention", "dual_path_kmeans_cross_attention".
    decoder_channels, decoder_key_depth, decoder_value_depth, decoder_num_heads,
      ffn_channels: transformer decoder widths (256, 128, 256, 8, 2048).
    embedding_dim: pixel/mask embedding D (128).
    pixel_head_channels: hidden width of the pixel heads (256).
    decoder_drop_path_rate: transformer decoder drop path (0.2 = keep 0.8).
    drop_query_keep_number: drop-query regularization (training only): keep this many
      random cluster centers per image, 0 = off (see transformer_decoder). Outputs
      keep N queries; dropped ones have constant void class logits and -1e4 mask
      logits. Must be >= the data's max_segments.
    drop_query_seed: optional seed of the drop-query sampling.
    use_semantic_decoder: COCO-style auxiliary semantic decoder (True) or the
      Cityscapes head on res5 (False).
    semantic_channels: ASPP / decoder / head width of the semantic branch (256).
    semantic_low_level_channels: res3 / res2 projections (64, 32).
    activation: 'gelu'.
    norm_config: BN config for every part built here (see layers.normalization),
      e.g. {"synchronized": True}.
  """

  def __init__(self, num_classes: int, backbone: Union[str, keras.layers.Layer] = "resnet50",
               backbone_kwargs: Optional[Mapping[str, Any]] = None,
               num_queries: int = 128,
               pixel_decoder_dims: Sequence[int] = (512, 256, 128, 64),
               pixel_decoder_blocks: Sequence[int] = (1, 5, 1, 1),
               pixel_decoder_block_types: Optional[Sequence[str]] = None,
               axial_num_heads: int = 8,
               pixel_decoder_dilation_rate: int = 2,
               decoder_layers: Sequence[int] = (2, 2, 2),
               interaction: str = "kmeans_cross_attention",
               decoder_channels: int = 256, decoder_key_depth: int = 128,
               decoder_value_depth: int = 256, decoder_num_heads: int = 8,
               ffn_channels: int = 2048, embedding_dim: int = 128,
               pixel_head_channels: int = 256,
               decoder_drop_path_rate: float = 0.2,
               drop_query_keep_number: int = 0,
               drop_query_seed: Optional[int] = None,
               use_semantic_decoder: bool = True, semantic_channels: int = 256,
               semantic_low_level_channels: Sequence[int] = (64, 32),
               activation: str = "gelu",
               norm_config: Optional[Mapping[str, Any]] = None, **kwargs):
    kwargs.setdefault("name", "kmax_deeplab")
    super().__init__(**kwargs)
    if isinstance(backbone, str):
      self.backbone_name = backbone
      self.backbone = backbones.build_backbone(backbone, **dict(backbone_kwargs or {}))
    else:
      self.backbone_name = None
      self.backbone = backbone
    self.backbone_kwargs = dict(backbone_kwargs or {})
    self.num_classes = num_classes
    self.num_queries = num_queries
    self.pixel_decoder_dims = tuple(pixel_decoder_dims)
    self.pixel_decoder_blocks = tuple(pixel_decoder_blocks)
    if pixel_decoder_block_types is None:
      pixel_decoder_block_types = (("axial", "axial") + ("bottleneck",) *
                                   (len(self.pixel_decoder_dims) - 2))
    self.pixel_decoder_block_types = tuple(pixel_decoder_block_types)
    self.axial_num_heads = axial_num_heads
    self.pixel_decoder_dilation_rate = int(pixel_decoder_dilation_rate)
    self.decoder_layers = tuple(decoder_layers)
    self.interaction = interaction
    self.decoder_channels = decoder_channels
    self.decoder_key_depth = decoder_key_depth
    self.decoder_value_depth = decoder_value_depth
    self.decoder_num_heads = decoder_num_heads
    self.ffn_channels = ffn_channels
    self.embedding_dim = embedding_dim
    self.pixel_head_channels = pixel_head_channels
    self.decoder_drop_path_rate = decoder_drop_path_rate
    self.drop_query_keep_number = int(drop_query_keep_number)
    self.drop_query_seed = drop_query_seed
    self.use_semantic_decoder = use_semantic_decoder
    self.semantic_channels = semantic_channels
    self.semantic_low_level_channels = tuple(semantic_low_level_channels)
    self.activation = activation
    self.norm_config = normalization.resolve_norm_config(norm_config)
    nc = self.norm_config
    # Stride of mask_logits / pixel_embeddings: 4, or for the five-stage decoder the
    # stride of the backbone's stage1 feature (2 ResNets, 4 ConvNeXt; deeplab2).
    self.output_stride = pixel_decoder_lib.finest_stride(
        len(self.pixel_decoder_dims), self.backbone)

    self.pixel_decoder = pixel_decoder_lib.KMaXPixelDecoder(
        self.pixel_decoder_dims, self.pixel_decoder_blocks,
        self.pixel_decoder_block_types, num_heads=axial_num_heads,
        bottleneck_dilation_rate=self.pixel_decoder_dilation_rate,
        activation=activation, norm_config=nc, name="pixel_decoder")
    self.transformer_decoder = transformer_decoder_lib.KMaXTransformerDecoder(
        num_classes, num_queries=num_queries,
        num_layers_per_stride=self.decoder_layers, interaction=interaction,
        channels=decoder_channels, bottleneck_channels=decoder_channels,
        key_depth=decoder_key_depth, value_depth=decoder_value_depth,
        num_heads=decoder_num_heads, ffn_channels=ffn_channels,
        embedding_dim=embedding_dim, pixel_head_channels=pixel_head_channels,
        activation=activation, drop_path_rate=decoder_drop_path_rate,
        drop_query_keep_number=self.drop_query_keep_number,
        drop_query_seed=drop_query_seed,
        norm_config=nc, name="transformer_decoder")
    self.prediction_head = heads.PredictionHead(
        num_classes, embedding_dim, pixel_head_channels, activation=activation,
        norm_config=nc, name="prediction_head")
    self.semantic_branch = semantic_decoder_lib.SemanticDecoder(
        num_classes, use_decoder=use_semantic_decoder,
        aspp_channels=semantic_channels, decoder_channels=semantic_channels,
        low_level_channels=self.semantic_low_level_channels,
        head_channels=semantic_channels, activation=activation, norm_config=nc,
        name="semantic_branch")
    # Every sub-layer computes in the model's policy (`dtype=`), whatever the global one.
    policy_sharing.share_dtype_policy(self)

  def build(self, input_shape):
    pass  # sub-layers create their weights on the first call (shapes are dynamic)

  def call(self, images, training=False):
    outputs = self._forward(images, bool(training))
    if self.compute_dtype != "float32":  # outputs are float32 whatever the policy
      outputs = keras.tree.map_structure(
          lambda t: ops.cast(t, "float32") if "float" in str(t.dtype) else t,
          outputs)
    return outputs

  def _forward(self, images, training):
    x = ops.cast(images, "float32") / 127.5 - 1.0
    endpoints = self.backbone(x, training=training)
    pixel_features = self.pixel_decoder(endpoints, training=training)
    decoded = self.transformer_decoder(pixel_features[:3], training=training)
    final = self.prediction_head(pixel_features[-1], decoded["class_features"],
                                 decoded["mask_features"], training=training)
    if "kept_queries" in decoded:  # drop query (training): back to N queries
      final = transformer_decoder_lib.restore_prediction(
          final, decoded["kept_queries"], self.num_queries, self.num_classes)
    size = ops.shape(final[output_keys.MASK_LOGITS])[1:3]
    aux_outputs = []
    for prediction in decoded["aux_predictions"]:
      aux = dict(prediction)
      if training:  # the losses compare them with the labels at the final size
        for key in _RESIZED_AUX_KEYS:
          aux[key] = resize.resize_align_corners(aux[key], (size[0], size[1]))
      aux_outputs.append(aux)
    outputs = dict(final)
    outputs[output_keys.AUX_OUTPUTS] = aux_outputs
    outputs[output_keys.CLUSTER_ASSIGNMENTS] = decoded[output_keys.CLUSTER_ASSIGNMENTS]
    if training:
      outputs[output_keys.SEMANTIC_LOGITS] = self.semantic_branch(endpoints,
                                                                  training=training)
    return outputs

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    """Adds the list-held sub-layers (see `tracking.list_held_layers`) to checkpoints.

    Every layer class that keeps sub-layers in lists now tracks them itself
    (layers.tracking.TrackListHeldLayers), so sub-layer checkpoints are complete; these
    whole-tree "listed/..." edges at the root are kept so that model checkpoints
    written before that keep restoring (same layout).
    """
    children = super()._trackable_children(save_type, **kwargs)
    if save_type == "checkpoint":
      for key, layer in tracking.list_held_layers(self).items():
        children.setdefault(f"listed/{key}", layer)
    return children

  def get_config(self):
    config = {"name": self.name, "num_classes": self.num_classes}
    if self.backbone_name is not None:
      config["backbone"] = self.backbone_name
    else:
      config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
    config.update({
        "backbone_kwargs": self.backbone_kwargs, "num_queries": self.num_queries,
        "pixel_decoder_dims": self.pixel_decoder_dims,
        "pixel_decoder_blocks": self.pixel_decoder_blocks,
        "pixel_decoder_block_types": self.pixel_decoder_block_types,
        "axial_num_heads": self.axial_num_heads,
        "pixel_decoder_dilation_rate": self.pixel_decoder_dilation_rate,
        "decoder_layers": self.decoder_layers, "interaction": self.interaction,
        "decoder_channels": self.decoder_channels,
        "decoder_key_depth": self.decoder_key_depth,
        "decoder_value_depth": self.decoder_value_depth,
        "decoder_num_heads": self.decoder_num_heads,
        "ffn_channels": self.ffn_channels, "embedding_dim": self.embedding_dim,
        "pixel_head_channels": self.pixel_head_channels,
        "decoder_drop_path_rate": self.decoder_drop_path_rate,
        "drop_query_keep_number": self.drop_query_keep_number,
        "drop_query_seed": self.drop_query_seed,
        "use_semantic_decoder": self.use_semantic_decoder,
        "semantic_channels": self.semantic_channels,
        "semantic_low_level_channels": self.semantic_low_level_channels,
        "activation": self.activation, "norm_config": self.norm_config,
    })
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    if isinstance(config.get("backbone"), dict):
      config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
    return cls(**config)


@gin.configurable
def build_model(num_classes: int, backbone: Union[str, keras.layers.Layer] = "resnet50",
                backbone_kwargs: Optional[Mapping[str, Any]] = None,
                dtype_policy: Optional[str] = None,
                **kwargs) -> KMaXDeepLab:
  """Builds KMaXDeepLab; every KMaXDeepLab constructor argument can be bound by gin.

  e.g. `build_model.num_queries = 256`, `build_model.decoder_layers = (1, 1, 1)`,
  `build_model.interaction = "dual_path_kmeans_cross_attention"`,
  `build_model.norm_config = {"synchronized": True}`.

  `dtype_policy`: Keras dtype policy of the model's computations (default: the global
  one). "mixed_bfloat16" runs the convolutions and matmuls in bfloat16 through
  oneDNN's AVX512-BF16/AMX kernels, about 1.7x faster inference on such CPUs;
  variables (hence checkpoints) stay float32 and the outputs are cast to float32.
  Not with XLA on CPU (bf16 fails on XLA:CPU).
  """
  if dtype_policy is not None:
    kwargs["dtype"] = dtype_policy
  return KMaXDeepLab(num_classes, backbone=backbone, backbone_kwargs=backbone_kwargs,
                     **kwargs)
