"""The names of the model's outputs.

`KMaXDeepLab.call` returns a dict keyed by the model names below; the losses, the
post-processing, the predictor, export and the checkpoint-parity check read them from
here.
"""

# The model (KMaXDeepLab.call; PredictionHead for the per-layer predictions).
CLASS_LOGITS = "class_logits"  # [B, N, num_classes + 1], the last class is void
MASK_LOGITS = "mask_logits"  # [B, H/4, W/4, N] (the pixel decoder's finest stride)
PIXEL_EMBEDDINGS = "pixel_embeddings"  # [B, H/4, W/4, D], L2-normalized
AUX_OUTPUTS = "aux_outputs"  # per k-means layer, a dict of the three keys above at the
# layer's own stride (in training resized to the final size, for the losses)
CLUSTER_ASSIGNMENTS = "cluster_assignments"  # int32 [B, h, w] argmax maps, per layer
SEMANTIC_LOGITS = "semantic_logits"  # auxiliary semantic decoder (training only)
