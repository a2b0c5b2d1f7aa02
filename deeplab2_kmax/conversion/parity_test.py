"""parity.deeplab2_outputs refuses mergers whose mask_stride is not the model's stride."""
import numpy as np
import pytest

from deeplab2_kmax.conversion import label_space
from deeplab2_kmax.conversion import parity
from deeplab2_kmax.post_processing import MaskWiseMerger


class _Stride2Model:
  output_stride = 2

  def __call__(self, *args, **kwargs):
    raise AssertionError("the stride check must come first")


@pytest.mark.parametrize("which", ["merger", "no_area_limit_merger"])
def test_deeplab2_outputs_checks_the_merger_stride(which):
  space = label_space.cityscapes()
  good = MaskWiseMerger(list(space.thing_train_ids), 1000, 255, mask_stride=2)
  bad = MaskWiseMerger(list(space.thing_train_ids), 1000, 255)  # stride 4
  mergers = {"merger": good, "no_area_limit_merger": good, which: bad}
  with pytest.raises(ValueError, match="mask_stride=4 differs from the model's "
                     "output_stride=2"):
    parity.deeplab2_outputs(_Stride2Model(), mergers["merger"], space,
                            np.zeros((1, 33, 33, 3), np.float32), 1000, 255,
                            no_area_limit_merger=mergers["no_area_limit_merger"])
