"""Hand-built cases for every panopticapi rule (docs/PAPER.md §6), expected numbers by hand."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evaluation import panoptic_quality as pqm
from evaluation import writers

CATS = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 1},
        {"id": 7, "name": "s", "isthing": 0}]


def _write(tmp_path, name, images, categories=CATS):
  """images: list of (ids [H, W], segments [(id, category_id, iscrowd)])."""
  folder = tmp_path / name
  folder.mkdir(exist_ok=True)
  anns = []
  for i, (ids, segs) in enumerate(images):
    ids = np.asarray(ids, np.uint32)
    writers.write_id_png(str(folder / f"{i}.png"), ids)
    info = [{"id": s, "category_id": c, "iscrowd": cr, "area": int((ids == s).sum())}
            for s, c, cr in segs]
    anns.append({"image_id": i, "file_name": f"{i}.png", "segments_info": info})
  path = tmp_path / f"{name}.json"
  path.write_text(json.dumps({"annotations": anns, "categories": categories}))
  return str(path), str(folder)


def _pq(tmp_path, gt_images, pred_images, categories=CATS):
  gj, gf = _write(tmp_path, "gt", gt_images, categories)
  pj, pf = _write(tmp_path, "pred", pred_images, categories)
  return pqm.pq_compute(gj, pj, gf, pf, num_workers=1, progress=False)


def _grid(rows):
  return np.array(rows, np.uint32)


def test_iou_exactly_half_is_not_a_match(tmp_path):
  gt = _grid([[5, 5, 5, 5], [0, 0, 0, 0]])
  pred_half = _grid([[9, 9, 0, 0], [0, 0, 0, 0]])  # inter 2, union 4 + 2 - 2 = 4
  r = _pq(tmp_path, [(gt, [(5, 1, 0)])], [(pred_half, [(9, 1, 0)])])
  # IoU 0.5 -> no match: FN 1, FP 1 (pred not on void) -> PQ 0, RQ 0, n = 1.
  assert r["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}
  assert r["per_class"]["1"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
  pred_three = _grid([[9, 9, 9, 0], [0, 0, 0, 0]])  # IoU 3/4 -> TP
  r = _pq(tmp_path, [(gt, [(5, 1, 0)])], [(pred_three, [(9, 1, 0)])])
  assert r["per_class"]["1"] == {"pq": 0.75, "sq": 0.75, "rq": 1.0}
  assert r["Things"]["n"] == 1 and r["Stuff"]["n"] == 0


def test_void_pixels_are_removed_from_the_union(tmp_path):
  gt = _grid([[5, 5, 0, 0], [5, 5, 0, 0]])
  pred = _grid([[9, 9, 9, 9], [9, 9, 9, 9]])  # 4 on gt, 4 on void
  r = _pq(tmp_path, [(gt, [(5, 7, 0)])], [(pred, [(9, 7, 0)])])
  # union = 8 + 4 - 4 - 4 = 4 -> IoU 1 (without the void rule it would be 0.5, no match)
  assert r["per_class"]["7"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}
  assert r["Stuff"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}


def test_unlisted_gt_id_is_not_void(tmp_path):
  gt = _grid([[5, 5, 3, 3], [5, 5, 3, 3]])  # id 3 is in the PNG but not in the JSON
  pred = _grid([[9, 9, 9, 9], [9, 9, 9, 9]])
  r = _pq(tmp_path, [(gt, [(5, 7, 0)])], [(pred, [(9, 7, 0)])])
  # union = 8 + 4 - 4 - 0 = 8 -> IoU 0.5, no match; FP not ignored (0 void) -> PQ 0
  assert r["per_class"]["7"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}


def test_fp_ignored_when_more_than_half_void_plus_same_category_crowd(tmp_path):
  gt = _grid([[0, 0, 4, 6], [5, 5, 5, 5]])  # 4: crowd of cat 2, 6: crowd of cat 1
  gt_segs = [(4, 2, 1), (5, 7, 0), (6, 1, 1)]
  pred = _grid([[9, 9, 9, 8], [0, 0, 8, 0]])
  # pred 9 (cat 2): void 2 + crowd(cat 2) 1 = 3 of 3 px -> ignored.
  # pred 8 (cat 2): void 0 + crowd of cat 2: 0 (it covers cat-1 crowd and stuff) -> FP.
  r = _pq(tmp_path, [(gt, gt_segs)], [(pred, [(9, 2, 0), (8, 2, 0)])])
  # cat 2: FP 1 -> present, PQ 0; cat 7: FN 1 -> PQ 0; cat 1: only a crowd -> absent.
  assert r["All"]["n"] == 2 and r["Things"]["n"] == 1 and r["Stuff"]["n"] == 1
  assert r["per_class"]["1"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}


def test_crowd_only_counts_for_its_own_category(tmp_path):
  gt = _grid([[4, 4, 0, 7], [7, 7, 7, 7]])  # 4: crowd of cat 1
  # pred 9 of cat 2 on crowd(cat 1) 2 px + void 1 px + stuff 1 px: (1 + 0) / 4 -> FP.
  pred = _grid([[9, 9, 9, 9], [0, 0, 0, 0]])
  r = _pq(tmp_path, [(gt, [(4, 1, 1), (7, 7, 0)])], [(pred, [(9, 2, 0)])])
  # cat 2: FP 1 -> pq 0; cat 7: FN 1 -> pq 0; n = 2
  assert r["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2}
  # Same prediction as cat 1: (1 void + 2 crowd) / 4 = 0.75 > 0.5 -> ignored.
  r = _pq(tmp_path, [(gt, [(4, 1, 1), (7, 7, 0)])], [(pred, [(9, 1, 0)])])
  assert r["All"]["n"] == 1 and r["Things"]["n"] == 0


def test_exactly_half_ignored_area_still_counts_as_fp(tmp_path):
  gt = _grid([[0, 0, 7, 7]])
  pred = _grid([[9, 9, 9, 9]])  # void 2 / 4 = 0.5, not > 0.5 -> FP; cat 7 FN
  r = _pq(tmp_path, [(gt, [(7, 7, 0)])], [(pred, [(9, 1, 0)])])
  assert r["All"]["n"] == 2 and r["Things"]["n"] == 1


def test_only_last_crowd_segment_of_a_category_is_used(tmp_path):
  gt = _grid([[3, 3, 4, 4], [7, 7, 7, 7]])  # 3 and 4 both crowd of cat 1; 4 listed last
  pred_on_first = _grid([[9, 9, 0, 0], [0, 0, 0, 0]])
  r = _pq(tmp_path, [(gt, [(3, 1, 1), (4, 1, 1), (7, 7, 0)])],
          [(pred_on_first, [(9, 1, 0)])])
  assert r["Things"]["n"] == 1  # not ignored: only crowd 4 counts -> FP
  r = _pq(tmp_path, [(gt, [(4, 1, 1), (3, 1, 1), (7, 7, 0)])],
          [(pred_on_first, [(9, 1, 0)])])
  assert r["Things"]["n"] == 0  # now 3 is the last crowd -> 2/2 ignored


def test_empty_predictions_and_empty_splits(tmp_path):
  gt = _grid([[5, 5, 6, 6], [7, 7, 7, 7]])
  empty = np.zeros((2, 4), np.uint32)
  r = _pq(tmp_path, [(gt, [(5, 1, 0), (6, 1, 0), (7, 7, 0)])], [(empty, [])])
  assert r["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2}
  assert r["Things"]["n"] == 1 and r["Stuff"]["n"] == 1
  # Everything void: no category has TP+FP+FN > 0 -> zeros with n = 0, no crash.
  r = _pq(tmp_path, [(empty, [])], [(empty, [])])
  for split in ("All", "Things", "Stuff"):
    assert r[split] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
  # No thing categories at all.
  stuff_only = [c for c in CATS if not c["isthing"]]
  r = _pq(tmp_path, [(gt * 0 + 7, [(7, 7, 0)])], [(gt * 0 + 9, [(9, 7, 0)])], stuff_only)
  assert r["Things"]["n"] == 0 and r["Stuff"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}


def test_category_present_only_in_predictions(tmp_path):
  gt = _grid([[5, 5, 5, 5], [7, 7, 7, 7]])
  pred = _grid([[5, 5, 5, 0], [7, 7, 7, 8]])
  r = _pq(tmp_path, [(gt, [(5, 1, 0), (7, 7, 0)])],
          [(pred, [(5, 1, 0), (7, 7, 0), (8, 2, 0)])])
  # cat 1: IoU 3/4 TP; cat 7: pred 3 px, union 3 + 4 - 3 = 4 -> IoU 3/4 TP;
  # cat 2: FP only (pred 8 on stuff) -> counted with PQ 0.
  assert r["per_class"]["1"] == {"pq": 0.75, "sq": 0.75, "rq": 1.0}
  assert r["per_class"]["2"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
  assert r["Things"] == {"pq": 0.375, "sq": 0.375, "rq": 0.5, "n": 2}
  assert r["All"]["n"] == 3
  assert r["All"]["pq"] == pytest.approx(0.5)


def test_pq_sums_over_images_before_dividing(tmp_path):
  gt = _grid([[5, 5, 5, 5], [6, 6, 6, 6]])
  pred1 = _grid([[9, 9, 9, 9], [0, 0, 0, 0]])  # TP IoU 1, FN for 6
  pred2 = _grid([[9, 9, 9, 0], [8, 8, 8, 8]])  # TP 0.75, TP 1
  gsegs = [(5, 1, 0), (6, 1, 0)]
  r = _pq(tmp_path, [(gt, gsegs), (gt, gsegs)],
          [(pred1, [(9, 1, 0)]), (pred2, [(9, 1, 0), (8, 1, 0)])])
  # cat 1: TP 3, FN 1, FP 0, IoU sum 2.75 -> PQ 2.75 / 3.5, SQ 2.75 / 3, RQ 3 / 3.5
  assert r["per_class"]["1"]["pq"] == pytest.approx(2.75 / 3.5, abs=1e-15)
  assert r["per_class"]["1"]["sq"] == pytest.approx(2.75 / 3, abs=1e-15)
  assert r["per_class"]["1"]["rq"] == pytest.approx(3 / 3.5, abs=1e-15)


@pytest.mark.parametrize("case,message", [
    ("png_not_json", "presented in PNG and not presented in JSON"),
    ("json_not_png", "presented in JSON and not presented in PNG"),
    ("bad_category", "unknown category_id 99"),
])
def test_prediction_validation_errors_name_file_and_segment(tmp_path, case, message):
  gt = _grid([[5, 5, 5, 5]])
  pred = _grid([[9, 9, 3, 0]])
  segs = {"png_not_json": [(9, 1, 0)], "json_not_png": [(9, 1, 0), (3, 1, 0), (4, 1, 0)],
          "bad_category": [(9, 1, 0), (3, 99, 0)]}[case]
  with pytest.raises(pqm.PanopticFormatError, match=message) as err:
    _pq(tmp_path, [(gt, [(5, 1, 0)])], [(pred, segs)])
  text = str(err.value)
  assert "0.png" in text or "pred.json" in text
  assert {"png_not_json": "3", "json_not_png": "[4]", "bad_category": "3"}[case] in text


def test_missing_prediction_for_an_image(tmp_path):
  gt = _grid([[5, 5]])
  gj, gf = _write(tmp_path, "gt", [(gt, [(5, 1, 0)]), (gt, [(5, 1, 0)])])
  pj, pf = _write(tmp_path, "pred", [(gt, [(5, 1, 0)])])
  with pytest.raises(pqm.PanopticFormatError, match="no prediction for the image with id: 1"):
    pqm.pq_compute(gj, pj, gf, pf, num_workers=1, progress=False)


def _random_internal_maps(rng, n, h, w, num_classes, thing, divisor, ignore):
  maps = []
  for _ in range(n):
    sem = rng.integers(0, num_classes, size=(h // 4, w // 4)).repeat(4, 0).repeat(4, 1)
    inst = rng.integers(0, 3, size=(h // 8, w // 8)).repeat(8, 0).repeat(8, 1)
    inst = np.where(np.isin(sem, thing), inst, 0)
    m = sem * divisor + inst
    m[rng.random((h, w)) < 0.05] = ignore * divisor
    maps.append(m)
  return maps


def test_online_accumulator_matches_offline_cli(tmp_path):
  rng = np.random.default_rng(0)
  num_classes, thing, divisor, ignore = 5, [0, 1], 256, 255
  cat_ids = [3, 8, 11, 20, 21]
  gts = _random_internal_maps(rng, 4, 32, 48, num_classes, thing, divisor, ignore)
  preds = []
  for g in gts:  # perturbed copies: some matches, some misses
    p = g.copy()
    p[rng.random(g.shape) < 0.3] = ignore * divisor
    p[:, :16] = np.roll(p[:, :16], 5, axis=0)
    preds.append(p)
  cats = [{"id": c, "name": str(c), "isthing": int(i in thing)} for i, c in enumerate(cat_ids)]
  acc = pqm.PanopticQualityAccumulator(num_classes, divisor, ignore, thing, cat_ids)
  for name, maps in (("gt", gts), ("pred", preds)):
    w = writers.CocoPanopticWriter(str(tmp_path), cats, divisor, ignore, thing, cat_ids,
                                   name=name)
    for i, m in enumerate(maps):
      w.add(i, m, is_groundtruth=(name == "gt"))
    w.close()
  acc.update(np.stack(gts), np.stack(preds))
  online = acc.result()
  out = tmp_path / "metrics.json"
  proc = subprocess.run(
      [sys.executable, "-m", "evaluation.panoptic_quality",
       f"--gt_json_file={tmp_path / 'gt.json'}", f"--pred_json_file={tmp_path / 'pred.json'}",
       f"--gt_folder={tmp_path / 'gt'}", f"--pred_folder={tmp_path / 'pred'}",
       f"--output_json={out}", "--num_workers=2"],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
      check=True)
  assert "All" in proc.stdout and "Things" in proc.stdout
  offline = json.loads(out.read_text())
  assert offline["All"]["n"] >= 3 and 0 < offline["All"]["pq"] < 1
  for split in ("All", "Things", "Stuff"):
    for key in ("pq", "sq", "rq", "n"):
      assert offline[split][key] == pytest.approx(online[split][key], abs=1e-12)
  assert offline["per_class"].keys() == online["per_class"].keys()
  for cid, vals in online["per_class"].items():
    for key, v in vals.items():
      assert offline["per_class"][cid][key] == pytest.approx(v, abs=1e-12)


def test_read_id_png_fast_path_reuses_buffer_and_matches_slow_path(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 1 << 24, size=(7, 9)).astype(np.uint32)
  writers.write_id_png(str(tmp_path / "a.png"), ids)
  buf = np.zeros((7, 9), np.uint32)
  out = pqm.read_id_png(str(tmp_path / "a.png"), buf)
  assert out is buf
  np.testing.assert_array_equal(out, ids)
  rgb = np.asarray(Image.open(tmp_path / "a.png")).astype(np.uint32)
  np.testing.assert_array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], ids)
  Image.fromarray((ids % 251).astype(np.uint8)).save(tmp_path / "gray.png")  # 'L' mode
  np.testing.assert_array_equal(pqm.read_id_png(str(tmp_path / "gray.png"), buf), ids % 251)
  with pytest.raises(pqm.PanopticFormatError, match="cannot read panoptic PNG"):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    pqm.read_id_png(str(tmp_path / "bad.png"))


def test_lookup_tables_do_not_leak_ids_between_images(tmp_path):
  """Image 0 lists ids 5 (gt) and 9 (pred); image 1 has them in its PNGs unlisted."""
  gt0 = _grid([[5, 5, 5, 5]])
  gt1 = _grid([[5, 5, 6, 6]])  # 5 unlisted here: skipped, neither void nor segment
  pred = _grid([[9, 9, 9, 9]])
  r = _pq(tmp_path, [(gt0, [(5, 1, 0)]), (gt1, [(6, 1, 0)])],
          [(pred, [(9, 1, 0)]), (pred, [(9, 1, 0)])])
  # image 1: |pred| 4, |gt 6| 2, inter 2, void 0 -> IoU 2 / 4 = 0.5, no match: FN, FP.
  assert r["per_class"]["1"]["rq"] == pytest.approx(1 / 2)  # TP 1, FP 1, FN 1
  with pytest.raises(pqm.PanopticFormatError, match="segment with ID 9 is presented in PNG"):
    _pq(tmp_path, [(gt0, [(5, 1, 0)]), (gt0, [(5, 1, 0)])],
        [(pred, [(9, 1, 0)]), (pred, [])])


def _reference_counts(images, categories):
  """Independent per-pair loop over segment dicts, written from docs/PAPER.md §6."""
  cats = {c["id"]: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0} for c in categories}
  for gt, gsegs, pred, psegs in images:
    gt_info = {s: (c, cr, int((gt == s).sum())) for s, c, cr in gsegs}
    pred_info = {s: (c, int((pred == s).sum())) for s, c, _ in psegs}
    inter = {}
    for g, p in zip(gt.reshape(-1).tolist(), pred.reshape(-1).tolist()):
      inter[(g, p)] = inter.get((g, p), 0) + 1
    gt_hit, pred_hit = set(), set()
    for (g, p), n in sorted(inter.items()):
      if g not in gt_info or p not in pred_info or gt_info[g][1]:
        continue
      if gt_info[g][0] != pred_info[p][0]:
        continue
      union = pred_info[p][1] + gt_info[g][2] - n - inter.get((0, p), 0)
      if n / union > 0.5:
        cats[gt_info[g][0]]["tp"] += 1
        cats[gt_info[g][0]]["iou"] += n / union
        gt_hit.add(g)
        pred_hit.add(p)
    crowd = {}
    for s, (c, cr, _) in gt_info.items():
      if cr:
        crowd[c] = s
      elif s not in gt_hit:
        cats[c]["fn"] += 1
    for p, (c, area) in pred_info.items():
      if p in pred_hit:
        continue
      ignored = inter.get((0, p), 0) + (inter.get((crowd[c], p), 0) if c in crowd else 0)
      if ignored / area <= 0.5:
        cats[c]["fp"] += 1
  return cats


def test_random_images_match_an_independent_reference(tmp_path):
  rng = np.random.default_rng(3)
  images = []
  for _ in range(4):
    gt = rng.choice([0, 11, 12, 13, 14, 15], size=(12, 16), p=[.1, .3, .2, .2, .1, .1])
    gt[3:9, 4:12] = 12  # a big block so some predictions match
    pred = gt.copy()
    noise = rng.random(gt.shape) < 0.25
    pred[noise] = rng.choice([0, 21, 22, 23], size=int(noise.sum()))
    gsegs = [(int(s), int(rng.choice([1, 2, 7])), int(rng.random() < 0.2))
             for s in np.unique(gt) if s]
    cat_of = dict((s, c) for s, c, _ in gsegs)
    psegs = [(int(s), cat_of.get(int(s), int(rng.choice([1, 2, 7]))), 0)
             for s in np.unique(pred) if s]
    images.append((gt.astype(np.uint32), gsegs, pred.astype(np.uint32), psegs))
  r = _pq(tmp_path, [(g, gs) for g, gs, _, _ in images],
          [(p, ps) for _, _, p, ps in images])
  ref = _reference_counts(images, CATS)
  for cid, c in ref.items():
    denom = c["tp"] + 0.5 * c["fp"] + 0.5 * c["fn"]
    expected = c["iou"] / denom if denom else 0.0
    assert r["per_class"][str(cid)]["pq"] == pytest.approx(expected, abs=1e-12), cid
  assert sum(c["tp"] + c["fp"] + c["fn"] > 0 for c in ref.values()) == r["All"]["n"]


def _random_pairs(rng, num_images, shuffle_json=False):
  images = []
  for _ in range(num_images):
    gt = rng.choice([0, 11, 12, 13, 14, 15, 300, 70000], size=(14, 18))
    gt[2:10, 3:15] = rng.choice([12, 300, 70000])
    pred = gt.copy()
    noise = rng.random(gt.shape) < 0.2
    pred[noise] = rng.choice([0, 21, 22, 65793], size=int(noise.sum()))
    gsegs = [(int(s), int(rng.choice([1, 2, 7])), int(rng.random() < 0.2))
             for s in np.unique(gt) if s]
    cat_of = dict((s, c) for s, c, _ in gsegs)
    psegs = [(int(s), cat_of.get(int(s), int(rng.choice([1, 2, 7]))), 0)
             for s in np.unique(pred) if s]
    if shuffle_json:  # JSON order is not id order: IoUs must still add in id order
      gsegs = [gsegs[i] for i in rng.permutation(len(gsegs))]
      psegs = [psegs[i] for i in rng.permutation(len(psegs))]
    images.append((gt.astype(np.uint32), gsegs, pred.astype(np.uint32), psegs))
  return images


def test_iou_sums_are_bit_identical_to_a_sequential_reference(tmp_path):
  images = _random_pairs(np.random.default_rng(5), 24, shuffle_json=True)
  gj, gf = _write(tmp_path, "gt", [(g, gs) for g, gs, _, _ in images])
  pj, pf = _write(tmp_path, "pred", [(p, ps) for _, _, p, ps in images])
  ref = _reference_counts(images, CATS)  # panopticapi's loop: iou += per match, in order
  for workers in (1, 2, 3):
    r = pqm.pq_compute(gj, pj, gf, pf, num_workers=workers, progress=False)
    for cid, c in ref.items():
      denom = c["tp"] + 0.5 * c["fp"] + 0.5 * c["fn"]
      assert r["per_class"][str(cid)]["pq"] == (c["iou"] / denom if denom else 0.0)
      assert r["per_class"][str(cid)]["sq"] == (c["iou"] / c["tp"] if c["tp"] else 0.0)


def test_threads_compiled_and_fallback_paths_give_identical_results(tmp_path, monkeypatch):
  from evaluation import png_decode  # pylint: disable=g-import-not-at-top
  images = _random_pairs(np.random.default_rng(6), 13)
  gj, gf = _write(tmp_path, "gt", [(g, gs) for g, gs, _, _ in images])
  pj, pf = _write(tmp_path, "pred", [(p, ps) for _, _, p, ps in images])
  results = [pqm.pq_compute(gj, pj, gf, pf, num_workers=w, progress=False)
             for w in (1, 2, 5)]
  monkeypatch.setattr(png_decode, "numba", None)  # Pillow decode + numpy counting
  monkeypatch.setattr(png_decode, "AVAILABLE", False)
  assert png_decode.decode_ids((tmp_path / "gt" / "0.png").read_bytes()) is None
  results += [pqm.pq_compute(gj, pj, gf, pf, num_workers=w, progress=False) for w in (1, 2)]
  assert all(r == results[0] for r in results[1:])
  assert results[0]["All"]["n"] == 3


def test_threads_report_the_first_bad_image_in_order(tmp_path):
  good = (_grid([[5, 5], [0, 0]]), [(5, 1, 0)])
  pred_ok = (_grid([[9, 9], [0, 0]]), [(9, 1, 0)])
  pred_unlisted = (_grid([[9, 9], [8, 0]]), [(9, 1, 0)])
  gts = [good] * 40
  preds = [pred_ok] * 40
  preds[23] = (pred_unlisted[0] * 0 + 7, [(9, 1, 0)])
  preds[31] = pred_unlisted
  gj, gf = _write(tmp_path, "gt", gts)
  pj, pf = _write(tmp_path, "pred", preds)
  for workers in (1, 2, 4):
    with pytest.raises(pqm.PanopticFormatError, match="image with ID 23 segment with ID 7"):
      pqm.pq_compute(gj, pj, gf, pf, num_workers=workers, progress=False)
