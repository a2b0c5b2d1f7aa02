"""KMaXLoss: the full kMaX-DeepLab training loss with deep supervision.

total = pq_style_weight * pq_style + mask_id_weight * mask_id
      + instance_discrimination_weight * instance_discrimination
      + semantic_weight * semantic

* `pq_style`, `mask_id`, `instance_discrimination` are each the *sum* over the final
  output and every entry of `outputs["aux_outputs"]` (one per decoder layer, equal
  weight, as deeplab2; the list may be empty). The dict reports these sums unweighted.
* `semantic` uses `outputs["semantic_logits"]` (final output only).
* Resolutions: the labels' strided targets are at `build_dataset(label_stride=s)`, which
  must be the model's `output_stride` (the stride of every `mask_logits` and
  `pixel_embeddings`, checked). The semantic logits stay at stride 4 even when s = 2
  (Cityscapes); their targets are then the label-grid pixels `[::2, ::2]` (exactly the
  stride-4 targets, since crops are 4k+1; `ground_truth.subsample_to`), so the
  pipeline emits no separate stride-4 keys and the logits are not resized.
* Matching: by default the Hungarian matching of the final output, with its stop-
  gradient weights (matched dice, matched class probability, void ratio), is reused for
  every auxiliary output (deeplab2's choice: one matching per step, and all layers are
  pushed towards the same slot assignment). `aux_matching="recompute"` matches every
  layer's prediction separately instead.
* Normalization: every term is first a per-example loss (see the term modules), then
  reduced over the batch. With `global_batch_size=None` the reduction is the mean over
  the examples given (a per-replica mean). With `global_batch_size=G` it is
  sum(per-example) / G, so the trainer can *sum* the results across replicas (the
  tf.distribute convention) to get the global mean.
* Randomness (pixel sampling): pass `seed` (shape-[2] int tensor, e.g. [step, replica])
  for a deterministic stateless sample; without it fresh random noise is drawn.
"""
from typing import Any, Mapping, Optional

import gin
import keras
import tensorflow as tf

from deeplab2_kmax.core import output_keys
from deeplab2_kmax.losses.ground_truth import GroundTruth
from deeplab2_kmax.losses.ground_truth import flatten_pixels
from deeplab2_kmax.losses.ground_truth import prepare_ground_truth
from deeplab2_kmax.losses.ground_truth import subsample_to
from deeplab2_kmax.losses.instance_discrimination_loss import pixel_contrastive_loss
from deeplab2_kmax.losses.instance_discrimination_loss import (
    prototype_discrimination_loss)
from deeplab2_kmax.losses.mask_id_loss import mask_id_cross_entropy
from deeplab2_kmax.losses.pixel_sampling import sample_pixels_by_inverse_area
from deeplab2_kmax.losses.pq_style_loss import match_predictions
from deeplab2_kmax.losses.pq_style_loss import pq_style_loss
from deeplab2_kmax.losses.semantic_loss import semantic_cross_entropy

LOSS_KEYS = ("pq_style", "mask_id", "instance_discrimination", "semantic", "total")
_SEMANTIC_SEED_OFFSET = 1_000_003


@gin.configurable
class KMaXLoss:
  """Callable `loss(outputs, labels, seed=None) -> dict of scalar float32`."""

  def __init__(self,
               pq_style_weight: float = 3.0,
               mask_id_weight: float = 0.3,
               instance_discrimination_weight: float = 1.0,
               semantic_weight: float = 1.0,
               focal_alpha: float = 0.75,
               instance_discrimination_temperature: float = 0.3,
               instance_discrimination_sample_k: int = 4096,
               instance_discrimination_sample_temperature: float = 1.5,
               instance_discrimination_matmul_dtype: Optional[str] = None,
               semantic_sample_k: int = 0,
               semantic_sample_temperature: float = 2.0,
               semantic_top_k_percent: float = 1.0,
               aux_matching: str = "reuse",
               global_batch_size: Optional[int] = None):
    """Args (all gin-configurable):

      pq_style_weight, mask_id_weight, instance_discrimination_weight,
        semantic_weight: loss weights (COCO configs: 3.0 / 0.3 / 1.0 / 1.0).
      focal_alpha: weight of matched class terms and of the dice term (0.75).
      instance_discrimination_temperature: divides embedding similarities (0.3).
      instance_discrimination_sample_k: pixels sampled per image for the pixel-
        contrastive loss (4096); 0 selects the original MaX-DeepLab prototype loss
        over all thing pixels.
      instance_discrimination_sample_temperature: multiplies log inverse segment area
        in the sampling logits (1.5).
      instance_discrimination_matmul_dtype: dtype of the pixel-contrastive loss's
        [K, K] similarity matmuls ("float32" or "bfloat16"). None (default): the
        compute dtype of the Keras global dtype policy when the loss is called, i.e.
        bfloat16 when the trainer trains under mixed_bfloat16, else float32.
      semantic_sample_k: 0 (default, all pixels, as deeplab2's public code does) or
        the number of pixels sampled like the instance-discrimination pixels.
      semantic_sample_temperature: sampling temperature for semantic_sample_k (2.0).
      semantic_top_k_percent: keep only the hardest fraction of semantic pixels.
      aux_matching: "reuse" (default) the final output's matching for aux outputs,
        or "recompute" it for each one.
      global_batch_size: see the module docstring; None = per-replica mean.
    """
    if aux_matching not in ("reuse", "recompute"):
      raise ValueError(f"aux_matching must be 'reuse' or 'recompute', got "
                       f"{aux_matching!r}")
    if instance_discrimination_sample_k < 0 or semantic_sample_k < 0:
      raise ValueError("sample_k values must be >= 0")
    if global_batch_size is not None and global_batch_size <= 0:
      raise ValueError(f"global_batch_size must be positive, got "
                       f"{global_batch_size}")
    self.pq_style_weight = float(pq_style_weight)
    self.mask_id_weight = float(mask_id_weight)
    self.instance_discrimination_weight = float(instance_discrimination_weight)
    self.semantic_weight = float(semantic_weight)
    self.focal_alpha = float(focal_alpha)
    self.instance_discrimination_temperature = float(
        instance_discrimination_temperature)
    self.instance_discrimination_sample_k = int(instance_discrimination_sample_k)
    self.instance_discrimination_sample_temperature = float(
        instance_discrimination_sample_temperature)
    if instance_discrimination_matmul_dtype not in (None, "float32", "bfloat16"):
      raise ValueError("instance_discrimination_matmul_dtype must be None, 'float32' "
                       f"or 'bfloat16', got {instance_discrimination_matmul_dtype!r}")
    self.instance_discrimination_matmul_dtype = instance_discrimination_matmul_dtype
    self.semantic_sample_k = int(semantic_sample_k)
    self.semantic_sample_temperature = float(semantic_sample_temperature)
    self.semantic_top_k_percent = float(semantic_top_k_percent)
    self.aux_matching = aux_matching
    self.global_batch_size = global_batch_size

  def get_config(self) -> dict:
    return {k: v for k, v in vars(self).items()}

  def _reduce(self, per_example: tf.Tensor) -> tf.Tensor:
    if self.global_batch_size is None:
      return tf.reduce_mean(per_example)
    return tf.reduce_sum(per_example) / float(self.global_batch_size)

  def _instance_discrimination(self, embeddings: tf.Tensor, gt: GroundTruth,
                               seed: Optional[tf.Tensor],
                               layer: int) -> tf.Tensor:
    if self.instance_discrimination_sample_k == 0:
      return prototype_discrimination_loss(
          embeddings, gt, self.instance_discrimination_temperature)
    layer_seed = (None if seed is None else
                  tf.random.experimental.stateless_fold_in(seed, layer))
    indices = sample_pixels_by_inverse_area(
        gt.inverse_area, gt.in_segment, self.instance_discrimination_sample_k,
        self.instance_discrimination_sample_temperature, layer_seed)
    return pixel_contrastive_loss(embeddings, gt, indices,
                                  self.instance_discrimination_temperature,
                                  self._matmul_dtype())

  def _matmul_dtype(self) -> tf.DType:
    name = self.instance_discrimination_matmul_dtype
    if name is None:
      name = keras.config.dtype_policy().compute_dtype
    return tf.bfloat16 if name == "bfloat16" else tf.float32

  def _semantic(self, outputs: Mapping[str, Any], gt: GroundTruth,
                seed: Optional[tf.Tensor]) -> tf.Tensor:
    if output_keys.SEMANTIC_LOGITS not in outputs:
      raise KeyError("semantic_weight > 0 but outputs has no 'semantic_logits' "
                     "(call the model with training=True, or set "
                     "KMaXLoss.semantic_weight = 0)")
    logits = outputs[output_keys.SEMANTIC_LOGITS]
    targets = subsample_to(gt, tuple(logits.shape[1:3]),
                           "outputs['semantic_logits']")
    indices = None
    if self.semantic_sample_k > 0:
      sem_seed = (None if seed is None else tf.random.experimental
                  .stateless_fold_in(seed, _SEMANTIC_SEED_OFFSET))
      indices = sample_pixels_by_inverse_area(
          targets.inverse_area, targets.in_segment, self.semantic_sample_k,
          self.semantic_sample_temperature, sem_seed)
    return semantic_cross_entropy(flatten_pixels(logits), targets.semantic,
                                  targets.semantic_weights, indices,
                                  self.semantic_top_k_percent)

  @staticmethod
  def _check_resolution(tensor: tf.Tensor, gt: GroundTruth, name: str):
    if tuple(tensor.shape[1:3]) != tuple(gt.grid):
      raise ValueError(
          f"outputs[{name!r}] has spatial shape {tuple(tensor.shape[1:3])} but "
          f"labels['masks'] has {tuple(gt.grid)}; both must be at the model's "
          "output_stride of the same crop (stride 4, or 2 for the Cityscapes "
          "configs: build_dataset(label_stride=model.output_stride))")

  def __call__(self, outputs: Mapping[str, Any], labels: Mapping[str, tf.Tensor],
               seed: Optional[tf.Tensor] = None) -> dict:
    """Computes the losses; see the module docstring for the reduction."""
    num_classes = outputs[output_keys.CLASS_LOGITS].shape[-1] - 1
    gt = prepare_ground_truth(labels, num_classes)
    if seed is not None:
      seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    predictions = [outputs] + list(outputs.get(output_keys.AUX_OUTPUTS, []) or [])
    final_match = None
    sums = {"pq_style": 0.0, "mask_id": 0.0, "instance_discrimination": 0.0}
    for layer, prediction in enumerate(predictions):
      self._check_resolution(prediction[output_keys.MASK_LOGITS], gt,
                             f"mask_logits (output {layer})")
      mask_logits = flatten_pixels(prediction[output_keys.MASK_LOGITS])
      class_logits = prediction[output_keys.CLASS_LOGITS]
      if final_match is None or self.aux_matching == "recompute":
        match = match_predictions(class_logits, mask_logits, gt)
        if final_match is None:
          final_match = match
      else:
        match = final_match
      if self.pq_style_weight:
        class_term, dice_term = pq_style_loss(class_logits, mask_logits, gt, match,
                                              self.focal_alpha)
        sums["pq_style"] += self._reduce(class_term + dice_term)
      if self.mask_id_weight:
        sums["mask_id"] += self._reduce(
            mask_id_cross_entropy(mask_logits, gt, match.assignment))
      if self.instance_discrimination_weight:
        embeddings = flatten_pixels(prediction[output_keys.PIXEL_EMBEDDINGS])
        sums["instance_discrimination"] += self._reduce(
            self._instance_discrimination(embeddings, gt, seed, layer))
    result = {key: tf.cast(value, tf.float32) for key, value in sums.items()}
    result["semantic"] = (self._reduce(self._semantic(outputs, gt, seed))
                          if self.semantic_weight else tf.constant(0.0))
    result["total"] = (self.pq_style_weight * result["pq_style"] +
                       self.mask_id_weight * result["mask_id"] +
                       self.instance_discrimination_weight *
                       result["instance_discrimination"] +
                       self.semantic_weight * result["semantic"])
    return result
