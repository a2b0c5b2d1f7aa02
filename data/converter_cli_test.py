"""data/converter_cli.py: the fixed-label-set category check and the output flags."""
import pytest
from absl import flags

from data import converter_cli
from data.panoptic_io import DataValidationError
from deeplab2_kmax.core.dataset_info import Category, DatasetInfo

INFO = DatasetInfo(name="toy", label_divisor=1000, ignore_label=255, categories=[
    Category(id=7, train_id=0, name="road", isthing=0, color=(1, 2, 3)),
    Category(id=24, train_id=1, name="person", isthing=1, color=(4, 5, 6))])


def test_known_ids_with_their_flags_pass_and_isthing_may_be_absent():
  converter_cli.check_json_categories(
      [{"id": 7, "name": "road", "isthing": 0}, {"id": 24, "name": "person"}],
      "a.json", INFO, "Toy", "a toy id")


def test_an_unknown_id_is_named_with_the_hint():
  with pytest.raises(DataValidationError,
                     match=r"^a\.json: category id 8 \(x\) is not a toy id$"):
    converter_cli.check_json_categories([{"id": 8, "name": "x"}], "a.json", INFO, "Toy",
                                        "a toy id")


def test_a_wrong_isthing_flag_names_the_class():
  with pytest.raises(DataValidationError, match=(
      r"^a\.json: category id 24 \(person\) has isthing 0, but Toy class 24 is 'person' "
      r"with isthing 1 \(shifted\?\)$")):
    converter_cli.check_json_categories([{"id": 24, "name": "person", "isthing": 0}],
                                        "a.json", INFO, "Toy", "a toy id", " (shifted?)")


def test_output_flags_and_the_report(capsys):
  fv = flags.FlagValues()
  converter_cli.define_output_flags(num_shards=3, flag_values=fv)
  with pytest.raises(flags.IllegalFlagValueError, match="output_dir"):
    fv(["prog"])  # required
  fv(["prog", "--output_dir=/tmp/o", "--split=train"])
  assert (fv.num_shards, fv.overwrite, fv.split, fv.output_dir) == (3, False, "train",
                                                                     "/tmp/o")
  info = DatasetInfo(name="toy", label_divisor=1000, ignore_label=255,
                     categories=INFO.categories, num_examples={"train": 12})
  assert converter_cli.run_and_report(lambda: info, "train", "/tmp/o") is info
  assert capsys.readouterr().out.startswith("wrote 12 train examples to /tmp/o in ")
