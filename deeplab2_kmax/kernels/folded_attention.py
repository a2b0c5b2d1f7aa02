"""Axial attention at inference with every batch norm folded into the projections.

`axial_attention_1d(layer, x, training)` equals `layers.AxialAttention1D.call` (up to
float rounding) when all its batch norms use their moving statistics, and returns None
otherwise (or with fast paths off):

* the qkv BN goes into the projection kernel and a bias;
* the content BN's scale goes into the value columns of that kernel (the attention
  weights are linear in v) and its shift into the output bias;
* the similarity BNs' per-head scales go into q resp. k; their shifts are dropped:
  constant along the softmax axis, they cancel in it;
* the relative-value BN scales the retrieved relative values and adds its shift.
Five fewer passes over the [B, heads, L, L] logits and the [B, L, C] outputs per axis.
"""

from keras import ops

from deeplab2_kmax.kernels import bn_folding
from deeplab2_kmax.kernels import policy


def axial_attention_1d(layer, x, training):
  """Folded inference form of `layer` (an AxialAttention1D) on x [B, L, C], or None."""
  if not policy.enabled() or any(bn_folding.uses_batch_statistics(bn, training)
                                 for bn in layer.batch_norms()):
    return None
  length = ops.shape(x)[1]
  dtype = x.dtype
  qkv_scale, qkv_shift = bn_folding.folded_affine(layer.qkv_bn, False)
  content_scale, content_shift = bn_folding.folded_affine(layer.content_bn, False)
  ones = ops.ones((2 * layer.key_depth,), "float32")
  column_scale = qkv_scale * ops.concatenate([ones, content_scale], axis=0)
  column_shift = qkv_shift * ops.concatenate([ones, content_scale], axis=0)
  # In the compute dtype: the kernel arrives autocast to it (mixed precision).
  kernel = ops.cast(layer.qkv_kernel, dtype) * ops.cast(column_scale, dtype)
  q, k, v = layer.split_heads(layer.project(x, kernel) + ops.cast(column_shift, dtype),
                              length)
  head_scales = [ops.cast(bn_folding.folded_scale(bn, False), dtype)[:, None]
                 for bn in layer.similarity_bns]  # [heads, 1] each
  logits = ops.einsum("blhd,bmhd->bhlm", q * head_scales[0], k)
  index = None
  if len(layer.similarity_bns) > 1 or layer.use_value_rpe:
    index = layer.distance_index(length, layer.max_span)
  term = 1
  if layer.use_query_rpe:
    rel = ops.take(ops.cast(layer.query_rpe, dtype), index, axis=0)  # [L, M, dk]
    logits = logits + ops.einsum("blhd,lmd->bhlm", q * head_scales[term], rel)
    term += 1
  if layer.use_key_rpe:
    rel = ops.take(ops.cast(layer.key_rpe, dtype), index, axis=0)
    logits = logits + ops.einsum("bmhd,lmd->bhlm", k * head_scales[term], rel)
  weights = ops.softmax(logits, axis=-1)
  out = ops.reshape(ops.einsum("bhlm,bmhd->blhd", weights, v),
                    (-1, length, layer.value_depth))
  shift = content_shift
  if layer.use_value_rpe:
    rpe_scale, rpe_shift = bn_folding.folded_affine(layer.value_rpe_bn, False)
    rel = ops.take(ops.cast(layer.value_rpe, dtype), index, axis=0)  # [L, M, dv]
    rpe_out = ops.reshape(ops.einsum("bhlm,lmd->blhd", weights, rel),
                          (-1, length, layer.value_depth))
    out = out + rpe_out * ops.cast(rpe_scale, dtype)
    shift = shift + rpe_shift
  return out + ops.cast(shift, dtype)
