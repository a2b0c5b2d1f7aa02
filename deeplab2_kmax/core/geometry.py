"""Input sizes: 32k + 1 crops, padding to them, and the one eval input size.

The model's output stride is 32, and every resize is align-corners, so inputs of
`32k + 1` pixels keep every feature map exactly on the input grid (stride-s grid point i
sits on pixel s·i). `padded_length` gives the smallest such size holding an image;
`check_input_size` validates a user's `--input_size`.

`eval_input_size` is the one definition of the padded input size of evaluation (the
trainer's and `evaluation/evaluate.py`'s), export and prediction: gin
`eval_input_size.size = (641, 641)`, bound by the recipes. Unbound, evaluation uses the
training crop size and export / predict pad each image to its own next 32k + 1 size.
"""

from typing import Optional, Sequence, Tuple

import gin

from deeplab2_kmax.core.cli import UserError

OUTPUT_STRIDE = 32


def padded_length(length, stride: int = OUTPUT_STRIDE):
  """Smallest `stride * k + 1 >= length` with k >= 1 (ints and int tensors)."""
  k = (length - 1 + stride - 1) // stride
  if isinstance(k, int):
    return stride * max(k, 1) + 1
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return stride * tf.maximum(k, 1) + 1


def check_input_size(input_size: Optional[Sequence[int]],
                     flag: str = "--input_size") -> Optional[Tuple[int, int]]:
  """Validates an input size (H, W): both must be 32k + 1 with k >= 1."""
  if input_size is None:
    return None
  if len(input_size) != 2:
    raise UserError(f"{flag}={input_size}: must be H,W")
  height, width = (int(v) for v in input_size)
  for v in (height, width):
    if v < OUTPUT_STRIDE + 1 or (v - 1) % OUTPUT_STRIDE:
      raise UserError(f"{flag}={height},{width}: values must be {OUTPUT_STRIDE}k+1 "
                      "(e.g. 641, 1281)")
  return height, width


def parse_input_size(text: Optional[str],
                     flag: str = "--input_size") -> Optional[Tuple[int, int]]:
  """'H,W' -> (H, W), validated by `check_input_size`; '' / None -> None."""
  if not text:
    return None
  try:
    values = [int(v) for v in text.split(",")]
  except ValueError as e:
    raise UserError(f"{flag}={text}: must be H,W integers") from e
  return check_input_size(values, flag)


@gin.configurable
def eval_input_size(size: Optional[Sequence[int]] = None) -> Optional[Tuple[int, int]]:
  """The padded eval / export / predict input size (H, W), or None (see the module
  docstring)."""
  return check_input_size(size, flag="eval_input_size.size")
