"""Tiny random labels/outputs in the DESIGN.md formats, shared by the loss tests."""
import numpy as np

from deeplab2_kmax.core import output_keys


def make_labels(rng: np.random.Generator, batch: int = 2, height: int = 5,
                width: int = 6, max_segments: int = 4, num_classes: int = 3,
                num_segments=None):
  """Random panoptic labels at stride 4: some void pixels, padding slots.

  num_segments: per-example number of real segments (default random 1..M).
  """
  pixels = height * width
  masks = np.zeros((batch, pixels, max_segments), np.float32)
  classes = np.full((batch, max_segments), num_classes, np.int32)
  valid = np.zeros((batch, max_segments), np.float32)
  is_thing = np.zeros((batch, max_segments), np.float32)
  semantic = np.full((batch, pixels), 255, np.int32)
  for b in range(batch):
    count = (int(rng.integers(1, max_segments + 1)) if num_segments is None
             else num_segments[b])
    if count == 0:
      continue
    owner = rng.integers(-1, count, size=pixels)   # -1 = void pixel
    owner[:count] = np.arange(count)                # every segment non-empty
    for m in range(count):
      masks[b, owner == m, m] = 1.0
      classes[b, m] = rng.integers(0, num_classes)
      valid[b, m] = 1.0
      is_thing[b, m] = float(rng.random() < 0.5)
      semantic[b, owner == m] = classes[b, m]
  ignore = (masks.sum(-1) == 0).astype(np.float32)
  weights = (1.0 - ignore) * rng.choice([1.0, 2.0], size=(batch, pixels))
  shape = (batch, height, width)
  return {
      "masks": masks.reshape(shape + (max_segments,)),
      "mask_classes": classes,
      "mask_valid": valid,
      "mask_is_thing": is_thing,
      "semantic_strided": semantic.reshape(shape),
      "ignore_strided": ignore.reshape(shape),
      "pixel_weights": weights.astype(np.float32).reshape(shape),
  }


def make_outputs(rng: np.random.Generator, batch: int = 2, height: int = 5,
                 width: int = 6, num_slots: int = 6, num_classes: int = 3,
                 dim: int = 4, num_aux: int = 0, scale: float = 2.0):
  """Random model outputs dict (float32 numpy), with num_aux aux outputs."""
  def one():
    emb = rng.normal(size=(batch, height, width, dim))
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    return {
        output_keys.CLASS_LOGITS: (scale * rng.normal(
            size=(batch, num_slots, num_classes + 1))).astype(np.float32),
        output_keys.MASK_LOGITS: (scale * rng.normal(
            size=(batch, height, width, num_slots))).astype(np.float32),
        output_keys.PIXEL_EMBEDDINGS: emb.astype(np.float32),
    }
  outputs = one()
  outputs[output_keys.SEMANTIC_LOGITS] = rng.normal(
      size=(batch, height, width, num_classes)).astype(np.float32)
  outputs[output_keys.AUX_OUTPUTS] = [one() for _ in range(num_aux)]
  return outputs


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
  return np.exp(log_softmax(x, axis))
