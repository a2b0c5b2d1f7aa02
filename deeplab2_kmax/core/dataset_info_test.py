"""DatasetInfo: id mapping, json round trip, validation."""
import json

import pytest

from deeplab2_kmax.core.dataset_info import Category, DatasetInfo, as_dataset_info

COCO_LIKE = [{"id": 40, "name": "wall", "isthing": 0},
             {"id": 3, "name": "car", "isthing": 1, "color": [1, 2, 3]},
             {"id": 17, "name": "cat", "isthing": 1}]


def test_train_ids_follow_the_category_id_order():
  info = DatasetInfo.from_coco_categories("x", COCO_LIKE, 256, 255)
  assert info.num_classes == 3
  assert info.train_id_to_category_id == {0: 3, 1: 17, 2: 40}
  assert info.category_id_to_train_id == {3: 0, 17: 1, 40: 2}
  assert info.category_ids == [3, 17, 40]
  assert info.thing_train_ids == [0, 1] and info.stuff_train_ids == [2]
  assert info.things_then_stuff_train_ids == [0, 1, 2]
  assert info.is_thing == [True, True, False]
  assert info.names == ["car", "cat", "wall"]
  assert info.colors[0] == [1, 2, 3] and len(set(map(tuple, info.colors))) == 3
  assert [c["id"] for c in info.coco_categories()] == [3, 17, 40]


def test_save_load_round_trip(tmp_path):
  info = DatasetInfo.from_coco_categories("x", COCO_LIKE, 1000, 255)
  info.num_examples["val"] = 7
  path = info.save(str(tmp_path))
  assert path.endswith("dataset_info.json")
  obj = json.load(open(path))
  assert obj["num_classes"] == 3 and obj["label_divisor"] == 1000
  assert obj["categories"][1] == {"id": 17, "train_id": 1, "name": "cat", "isthing": 1,
                                  "color": info.colors[1]}
  assert DatasetInfo.load(path) == info == as_dataset_info(str(tmp_path))


def test_bad_info_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="ignore_label 2 collides"):
    DatasetInfo.from_coco_categories("x", COCO_LIKE, 256, 2)
  with pytest.raises(ValueError, match="duplicate category ids"):
    DatasetInfo.from_coco_categories("x", COCO_LIKE + [COCO_LIKE[0]], 256, 255)
  bad = tmp_path / "dataset_info.json"
  bad.write_text('{"label_divisor": 256}')
  with pytest.raises(ValueError, match="dataset_info.json: malformed dataset info"):
    DatasetInfo.load(str(bad))
  with pytest.raises(ValueError, match="cannot read dataset info"):
    DatasetInfo.load(str(tmp_path / "missing.json"))


def test_things_then_stuff_order_of_interleaved_classes():
  # Cityscapes-like: stuff train ids 0-1 and 4, things 2-3 -> channels [2, 3, 0, 1, 4].
  cats = [{"id": i, "name": str(i), "isthing": int(i in (2, 3))} for i in range(5)]
  info = DatasetInfo.from_coco_categories("x", cats, 1000, 255)
  assert info.things_then_stuff_train_ids == [2, 3, 0, 1, 4]


def test_category_ids_are_indexed_by_train_id():
  """Train ids need not follow the category ids (Cityscapes, ADE20K): entry t is the
  category id of train id t, whatever order the categories were given in."""
  categories = [Category(7, 2, "road", 0, (1, 1, 1)), Category(24, 0, "person", 1, (2, 2, 2)),
                Category(11, 1, "building", 0, (3, 3, 3))]
  info = DatasetInfo("x", 1000, 255, categories)
  assert info.category_ids == [24, 11, 7]
  assert info.category_ids == [info.train_id_to_category_id[t] for t in range(3)]
