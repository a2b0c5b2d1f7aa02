"""COCO-panoptic and Cityscapes writers: file contents and round trip through PQ."""

import json

import numpy as np

from evaluation import panoptic_quality as pqm
from evaluation import writers

D = 1000
LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
THING = list(range(11, 19))


def _map():
  m = np.full((6, 8), 0 * D, np.int64)  # road (stuff)
  m[1:3, 1:4] = 11 * D + 1  # person instance 1
  m[3:5, 5:8] = 13 * D + 0  # car crowd
  m[5, :] = 255 * D  # void
  return m


def test_internal_to_segments_ids_areas_bboxes_crowd_and_scores():
  ids, segs = writers.internal_to_segments(_map(), D, 255, THING, LABEL_IDS,
                                           scores={11 * D + 1: 0.75})
  assert ids[5].tolist() == [0] * 8  # void -> id 0
  by_cat = {s["category_id"]: s for s in segs}
  assert set(by_cat) == {7, 24, 26}
  person = by_cat[24]
  assert person == {"id": 11 * D + 2, "category_id": 24, "iscrowd": 0, "area": 6,
                    "bbox": [1, 1, 3, 2], "isthing": 1, "score": 0.75}
  assert by_cat[26]["iscrowd"] == 1 and by_cat[26]["area"] == 6
  assert by_cat[7]["area"] == 48 - 8 - 6 - 6 and by_cat[7]["isthing"] == 0
  for s in segs:
    assert (ids == s["id"]).sum() == s["area"]


def test_png_round_trip_of_large_ids(tmp_path):
  ids = np.array([[0, 1, 255, 256], [65535, 65536, 16777215, 70000]], np.uint32)
  writers.write_id_png(str(tmp_path / "x.png"), ids)
  np.testing.assert_array_equal(pqm.read_id_png(str(tmp_path / "x.png")), ids)


def test_cityscapes_writer_names_label_ids_and_pq_of_identical_maps(tmp_path):
  cats = [{"id": l, "name": str(l), "isthing": int(t in THING)}
          for t, l in enumerate(LABEL_IDS)]
  pred = writers.CityscapesPanopticWriter(str(tmp_path), cats, D, 255, THING, LABEL_IDS,
                                          name="pred")
  ann = pred.add("lindau/lindau_000001_000019_leftImg8bit.png", _map())
  assert ann["image_id"] == "lindau_000001_000019"
  assert ann["file_name"] == "lindau_000001_000019_panoptic.png"
  assert {s["category_id"] for s in ann["segments_info"]} == {7, 24, 26}
  assert all("isthing" not in s for s in ann["segments_info"])
  pred.close()
  gt = writers.CocoPanopticWriter(str(tmp_path), cats, D, 255, THING, LABEL_IDS, name="gt")
  gt.add("lindau_000001_000019", _map(), file_name="lindau_000001_000019_gtFine_panoptic",
         is_groundtruth=True)
  gt.close()
  saved = json.loads((tmp_path / "pred.json").read_text())
  assert saved["categories"] == cats and len(saved["annotations"]) == 1
  r = pqm.pq_compute(str(tmp_path / "gt.json"), str(tmp_path / "pred.json"),
                     str(tmp_path / "gt"), str(tmp_path / "pred"), num_workers=1,
                     progress=False)
  # road and person matched with IoU 1; the car crowd is neither matched nor counted.
  assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
