"""Instance discrimination loss on the L2-normalized pixel embeddings.

Two variants, both from deeplab2 `max_deeplab_loss.py`:

* `pixel_contrastive_loss` (kMaX-DeepLab, the default; deeplab2 uses it whenever
  `instance_discrimination_sample_k > 0`, which all kMaX configs set to 4096): K pixels
  are sampled per image (Gumbel-top-k by log inverse segment area x 1.5, see
  `pixel_sampling.py`). For sampled pixels i, j the logit is
  `<f_i, f_j> / temperature` (temperature 0.3 divides the cosine similarity) and the
  soft target of row i is uniform over the sampled pixels of i's own segment (itself
  included). Loss = mean over the sampled pixels that lie in a segment of the soft-
  target cross-entropy. Sampled pixels outside every segment (only when an image has
  fewer than K segment pixels) get no row loss and are also masked out of the softmax
  (deeplab2 keeps them in the softmax denominator; masking them is the cleaner choice
  and changes nothing when K <= the number of segment pixels).
* `prototype_discrimination_loss` (original MaX-DeepLab): per-segment prototypes =
  L2-normalized mean embedding of each gt segment; each thing pixel is classified over
  the prototypes with logits `<f_p, proto_m> / temperature`, target its own segment.
"""
import tensorflow as tf

from deeplab2_kmax.losses.ground_truth import GroundTruth

_MASKED_LOGIT = -1e9


def _normalized_rows(x: tf.Tensor) -> tf.Tensor:
  return tf.math.l2_normalize(x, axis=-1)


def gram_logsumexp(features: tf.Tensor, column_bias: tf.Tensor,
                   temperature: float) -> tf.Tensor:
  """lse_i = log sum_j exp(<f_i, f_j> / temperature + column_bias_j), [B, K].

  The same values as `reduce_logsumexp(einsum(f / t, f) + bias)`, with a hand-written
  gradient that keeps no [K, K] tensor between the forward and the backward pass:
  the backward recomputes the logits (one matmul) and, since they are symmetric in
  f, gets d/df = (G + G^T) (f / t) with G = upstream * softmax in one matmul (the
  automatic gradient takes two, and keeps exp(logits) alive: 64 MiB per output and
  image at K = 4096). `column_bias` gets no gradient.
  """
  features = tf.convert_to_tensor(features)
  column_bias = tf.stop_gradient(tf.convert_to_tensor(column_bias))

  def logits_of(feats):
    scaled = feats / temperature
    return scaled, (tf.einsum("bkd,bjd->bkj", scaled, feats) +
                    column_bias[:, None, :])

  @tf.custom_gradient
  def forward(feats):
    _, logits = logits_of(feats)
    log_normalizer = tf.reduce_logsumexp(logits, axis=-1)

    def grad(upstream):
      scaled, logits = logits_of(feats)
      weighted = tf.exp(logits - log_normalizer[..., None]) * upstream[..., None]
      symmetric = weighted + tf.transpose(weighted, [0, 2, 1])
      return tf.einsum("bkj,bjd->bkd", symmetric, scaled)

    return log_normalizer, grad

  return forward(features)


def pixel_contrastive_loss(embeddings: tf.Tensor, gt: GroundTruth,
                           sample_indices: tf.Tensor,
                           temperature: float = 0.3) -> tf.Tensor:
  """Per-example loss [B].

  Args:
    embeddings: [B, P, D] flattened pixel embeddings (L2-normalized by the model).
    gt: the GroundTruth (masks [B, P, M]).
    sample_indices: [B, K] int32 pixel indices (from pixel_sampling).
    temperature: divides the embedding dot products.
  """
  embeddings = tf.cast(embeddings, tf.float32)
  features = tf.gather(embeddings, sample_indices, batch_dims=1)    # [B, K, D]
  onehot = tf.gather(gt.masks, sample_indices, batch_dims=1)        # [B, K, M]
  sample_valid = tf.reduce_sum(onehot, axis=-1)                     # [B, K]
  # Row i's cross-entropy against the uniform target over its segment's samples is
  #   sum_j t_ij (lse_i - l_ij) = [n_i > 0] lse_i - (sum_j same_ij l_ij) / max(n_i, 1)
  # with n_i = sum_j same_ij and same = onehot onehot^T. Both sums factor through the
  # per-segment sums of the sampled features ([B, M, D]), so no [K, K] target matrix,
  # log-softmax or their gradients are materialized: only the logits and their
  # log-sum-exp (2-3x less time and memory than the dense form for K = 4096).
  scaled = features / temperature
  segment_count = tf.reduce_sum(onehot, axis=1)                     # [B, M]
  segment_sum = tf.einsum("bkm,bkd->bmd", onehot, features)         # [B, M, D]
  same_count = tf.einsum("bkm,bm->bk", onehot, segment_count)       # [B, K] = n_i
  own_sum = tf.einsum("bkm,bmd->bkd", onehot, segment_sum)          # [B, K, D]
  target_logit_sum = tf.reduce_sum(scaled * own_sum, axis=-1)       # sum_j same l
  log_normalizer = gram_logsumexp(features, (1.0 - sample_valid) * _MASKED_LOGIT,
                                  temperature)                      # [B, K]
  denominator = tf.maximum(same_count, 1.0)
  cross_entropy = (log_normalizer * (same_count / denominator) -
                   target_logit_sum / denominator)
  return tf.math.divide_no_nan(tf.reduce_sum(sample_valid * cross_entropy, -1),
                               tf.reduce_sum(sample_valid, axis=-1))


def prototype_discrimination_loss(embeddings: tf.Tensor, gt: GroundTruth,
                                  temperature: float = 0.3) -> tf.Tensor:
  """Per-example loss [B] of the original MaX-DeepLab variant (thing pixels)."""
  embeddings = tf.cast(embeddings, tf.float32)
  prototypes = tf.einsum("bpd,bpm->bmd", embeddings, gt.masks)
  prototypes = _normalized_rows(
      prototypes / tf.maximum(gt.area, 1.0)[..., None])             # [B, M, D]
  logits = tf.einsum("bpd,bmd->bpm", embeddings, prototypes) / temperature
  logits = logits + (1.0 - gt.valid)[:, None, :] * _MASKED_LOGIT
  cross_entropy = -tf.reduce_sum(gt.masks * tf.nn.log_softmax(logits, axis=-1),
                                 axis=-1)
  thing_pixels = tf.einsum("bpm,bm->bp", gt.masks, gt.is_thing)
  return tf.math.divide_no_nan(tf.reduce_sum(thing_pixels * cross_entropy, -1),
                               tf.reduce_sum(thing_pixels, axis=-1))
