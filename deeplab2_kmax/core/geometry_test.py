"""core.geometry: 32k + 1 sizes, the padding rule, --input_size parsing, the eval size."""
import gin
import pytest

from deeplab2_kmax.core import geometry


def test_padded_length_is_the_smallest_32k_plus_1_holding_the_length():
  assert [geometry.padded_length(n) for n in (1, 33, 34, 65, 66, 641, 642)] == [
      33, 33, 65, 65, 97, 641, 673]
  assert geometry.padded_length(10, stride=4) == 13


def test_check_input_size():
  assert geometry.check_input_size(None) is None
  assert geometry.check_input_size([641, 1281]) == (641, 1281)
  for bad in ([640, 641], [1, 33], [32, 32], [641]):
    with pytest.raises(ValueError, match="--input_size"):
      geometry.check_input_size(bad)


def test_parse_input_size():
  assert geometry.parse_input_size("") is None
  assert geometry.parse_input_size(None) is None
  assert geometry.parse_input_size("641,513") == (641, 513)
  with pytest.raises(ValueError, match="--input_size=641x513: must be H,W integers"):
    geometry.parse_input_size("641x513")
  with pytest.raises(ValueError, match="--size=64,64: values must be 32k"):
    geometry.parse_input_size("64,64", flag="--size")


def test_eval_input_size_is_the_gin_binding():
  with gin.unlock_config():
    gin.clear_config()
    try:
      assert geometry.eval_input_size() is None
      gin.parse_config("eval_input_size.size = (97, 65)")
      assert geometry.eval_input_size() == (97, 65)
      gin.parse_config("eval_input_size.size = (96, 65)")
      with pytest.raises(ValueError, match="eval_input_size.size=96,65"):
        geometry.eval_input_size()
    finally:
      gin.clear_config()
