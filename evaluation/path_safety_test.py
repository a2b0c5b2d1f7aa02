"""Names read from JSON / TFRecords never lead outside their folder (PQ CLI, writers)."""
import json
import os
import re

import numpy as np
import pytest

from evaluation import panoptic_quality as pqm
from evaluation.panoptic_quality_test import _write
from evaluation import writers


def _pair(tmp_path):
  ids = np.array([[5, 5, 0, 0]], np.uint32)
  gj, gf = _write(tmp_path, "gt", [(ids, [(5, 1, 0)])])
  pj, pf = _write(tmp_path, "pred", [(ids, [(5, 1, 0)])])
  os.makedirs(tmp_path / "outside")
  os.rename(os.path.join(pf, "0.png"), tmp_path / "outside" / "secret.png")
  return gj, gf, pj, pf


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_pq_refuses_prediction_names_outside_pred_folder(tmp_path, how):
  gj, gf, pj, pf = _pair(tmp_path)
  target = str(tmp_path / "outside" / "secret.png")
  name = os.path.relpath(target, pf) if how == "relative" else target
  obj = json.load(open(pj))
  obj["annotations"][0]["file_name"] = name
  json.dump(obj, open(pj, "w"))
  with pytest.raises(pqm.PanopticFormatError,
                     match=rf"^{re.escape(pj)}: .*{re.escape(repr(name))} is outside"):
    pqm.pq_compute(gj, pj, gf, pf, num_workers=1, progress=False)


def test_pq_refuses_ground_truth_names_outside_gt_folder(tmp_path):
  gj, gf, pj, pf = _pair(tmp_path)
  obj = json.load(open(gj))
  obj["annotations"][0]["file_name"] = "../outside/secret.png"
  json.dump(obj, open(gj, "w"))
  with pytest.raises(pqm.PanopticFormatError, match=rf"^{re.escape(gj)}: .* is outside"):
    pqm.pq_compute(gj, pj, gf, pf, num_workers=1, progress=False)


def test_pq_reads_subfolders_inside(tmp_path):
  ids = np.array([[5, 5, 0, 0]], np.uint32)
  gj, gf = _write(tmp_path, "gt", [(ids, [(5, 1, 0)])])
  pj, pf = _write(tmp_path, "pred", [(ids, [(5, 1, 0)])])
  os.makedirs(os.path.join(pf, "sub"))
  os.rename(os.path.join(pf, "0.png"), os.path.join(pf, "sub", "0.png"))
  obj = json.load(open(pj))
  obj["annotations"][0]["file_name"] = "sub/0.png"
  json.dump(obj, open(pj, "w"))
  assert pqm.pq_compute(gj, pj, gf, pf, num_workers=1, progress=False)["All"]["pq"] == 1.0


@pytest.mark.parametrize("image_id", ["../../escaped", "/tmp/escaped_abs_kmax"])
def test_writer_refuses_image_ids_outside_its_folder(tmp_path, image_id):
  out = tmp_path / "out"
  writer = writers.CocoPanopticWriter(str(out), [{"id": 1, "name": "a", "isthing": 0}], 256,
                                      255, [], [1], name="groundtruth")
  with pytest.raises(ValueError, match=r"^--eval_tfrecord=val-\*: .* is outside"):
    writer.add(image_id, np.zeros((2, 2), np.int64), file_name=f"{image_id}.png",
               source="--eval_tfrecord=val-*")
  assert not os.path.exists(tmp_path / "escaped.png")
  assert not os.path.exists("/tmp/escaped_abs_kmax.png")
  assert os.listdir(tmp_path) == ["out"] and os.listdir(out / "groundtruth") == []
