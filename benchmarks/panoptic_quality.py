r"""Offline PQ speed: ours (evaluation.panoptic_quality) vs cocodataset/panopticapi.

  python benchmarks/panoptic_quality.py [--num_images=200] [--data_dir=/tmp/pq_bench]

Writes synthetic Cityscapes-size (1024x512) ground-truth/prediction PNG + JSON pairs
(~38 segments per image, crowd and void regions), then times our pq_compute (one
thread per CPU) and, when panopticapi is importable (it is not on PyPI: put a checkout
on PYTHONPATH, outside this repository), panopticapi's single-process
pq_compute_single_core on the same files, interleaved over --repeats runs (medians), and
checks the numbers agree ("identical": every PQ/SQ/RQ/n equal to the last bit). Also
times reading every PNG once in one thread with our reader (evaluation/png_decode.py)
and with Pillow (what panopticapi does), and, with --cli, the CLI end to end. The first
of our runs includes loading the numba kernels. The PNGs are written like real panoptic
PNGs (RGB, PIL's default zlib level and adaptive row filters, via evaluation.writers).
Prints one JSON object per line, with the load average.
"""

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from evaluation import panoptic_quality as pqm
from evaluation import writers

STUFF = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23]
THING = [24, 25, 26, 27, 28, 31, 32, 33]
CATEGORIES = ([{"id": c, "name": f"s{c}", "isthing": 0} for c in STUFF]
              + [{"id": c, "name": f"t{c}", "isthing": 1} for c in THING])


def _make_pair(rng, h, w):
  """(gt ids, gt segments, pred ids, pred segments) of one synthetic image."""
  yy, xx = np.mgrid[0:h, 0:w]
  gt = np.zeros((h, w), np.uint32)
  gsegs, psegs = [], []
  # 10 stuff bands with wavy boundaries.
  bounds = np.sort(rng.uniform(0, h, 9))
  wave = (np.sin(xx / rng.uniform(40, 120) + rng.uniform(0, 6)) * 15).astype(np.int32)
  band = np.searchsorted(bounds, yy + wave)
  stuff_cats = rng.choice(STUFF, 10)
  for b in range(10):
    sid = 1000 + b
    gt[band == b] = sid
    gsegs.append([sid, int(stuff_cats[b]), 0])
  # 28 thing instances (ellipses), 3 of them crowd.
  for k in range(28):
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(8, 60), rng.uniform(8, 90)
    sid = 5000 + k
    gt[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = sid
    gsegs.append([sid, int(rng.choice(THING)), int(k < 3)])
  gt[:, :12] = 0  # void border
  gt[rng.random((h, w)) < 0.002] = 0
  # Prediction: shifted copy, some relabelled or dropped, plus spurious blobs.
  pred = np.roll(gt, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
  pred = pred.copy()
  cat_of = {s: c for s, c, _ in gsegs}
  for s, c, _ in gsegs:
    r = rng.random()
    if r < 0.1:
      pred[pred == s] = 0
    elif r < 0.2:
      cat_of[s] = int(rng.choice(THING if c in THING else STUFF))
  for k in range(4):
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    sid = 9000 + k
    pred[((yy - cy) / 30) ** 2 + ((xx - cx) / 50) ** 2 < 1] = sid
    cat_of[sid] = int(rng.choice(THING))
  ids = [int(i) for i in np.unique(pred) if i != 0]
  psegs = [[s, cat_of[s], 0] for s in ids]
  present = set(int(i) for i in np.unique(gt))
  gsegs = [g for g in gsegs if g[0] in present]
  return gt, gsegs, pred, psegs


def make_dataset(data_dir, num_images, h=512, w=1024, seed=0):
  marker = os.path.join(data_dir, f"done_{num_images}_{h}x{w}")
  if os.path.exists(marker):
    return
  rng = np.random.default_rng(seed)
  anns = {"gt": [], "pred": []}
  for i in range(num_images):
    gt, gsegs, pred, psegs = _make_pair(rng, h, w)
    for name, ids, segs in (("gt", gt, gsegs), ("pred", pred, psegs)):
      writers.write_id_png(os.path.join(data_dir, name, f"{i}.png"), ids)
      values, counts = np.unique(ids, return_counts=True)
      area = dict(zip(values.tolist(), counts.tolist()))
      info = [{"id": s, "category_id": c, "iscrowd": cr, "area": area[s]}
              for s, c, cr in segs]
      anns[name].append({"image_id": i, "file_name": f"{i}.png", "segments_info": info})
  for name in ("gt", "pred"):
    with open(os.path.join(data_dir, f"{name}.json"), "w") as f:
      json.dump({"annotations": anns[name], "categories": CATEGORIES}, f)
  open(marker, "w").close()


def _cpu_seconds() -> float:
  """CPU time of this process and its reaped children (the PQ worker pool)."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  kids = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _max_diff(a, b):
  diffs = [abs(a[s][k] - b[s][k]) for s in ("All", "Things", "Stuff")
           for k in ("pq", "sq", "rq", "n")]
  diffs += [abs(a["per_class"][c][k] - b["per_class"][c][k])
            for c in a["per_class"] for k in ("pq", "sq", "rq")]
  return max(diffs)


def _panopticapi(files):
  """panopticapi's single-process pq_compute on the same files (None if not importable)."""
  try:
    from panopticapi import evaluation as papi
  except ImportError:
    return None
  with open(files["gt_json_file"]) as f:
    gt_json = json.load(f)
  with open(files["pred_json_file"]) as f:
    pred_json = json.load(f)
  cats = {c["id"]: c for c in gt_json["categories"]}
  pred_by_id = {a["image_id"]: a for a in pred_json["annotations"]}
  pairs = [(a, pred_by_id[a["image_id"]]) for a in gt_json["annotations"]]
  with contextlib.redirect_stdout(io.StringIO()):
    stat = papi.pq_compute_single_core(0, pairs, files["gt_folder"], files["pred_folder"],
                                       cats)
  theirs = {}
  for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
    theirs[name], per_class = stat.pq_average(cats, isthing=isthing)
    if name == "All":
      theirs["per_class"] = {str(k): v for k, v in per_class.items()}
  return theirs


def _timed(fn):
  t0, c0 = time.perf_counter(), _cpu_seconds()
  out = fn()
  return out, time.perf_counter() - t0, _cpu_seconds() - c0


def _decode_only(folders, pillow=False):
  """Reading every PNG once into ids, in one thread (ours, or Pillow's as panopticapi)."""
  out = None
  for folder in folders:
    for name in sorted(os.listdir(folder)):
      path = os.path.join(folder, name)
      if pillow:
        rgb = np.asarray(Image.open(path), np.uint32)
        _ = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
      else:
        out = pqm.read_id_png(path, out)


def _median(xs):
  return float(np.median(xs))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--num_images", type=int, default=200)
  parser.add_argument("--data_dir", default="/tmp/pq_bench")
  parser.add_argument("--num_workers", type=int, default=0)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--cli", action="store_true",
                      help="also time the CLI end to end (new interpreter, imports)")
  args = parser.parse_args()
  t0 = time.perf_counter()
  make_dataset(args.data_dir, args.num_images)
  print(json.dumps({"stage": "data", "num_images": args.num_images,
                    "seconds": round(time.perf_counter() - t0, 2)}), flush=True)
  files = dict(gt_json_file=os.path.join(args.data_dir, "gt.json"),
               pred_json_file=os.path.join(args.data_dir, "pred.json"),
               gt_folder=os.path.join(args.data_dir, "gt"),
               pred_folder=os.path.join(args.data_dir, "pred"))
  load_before = os.getloadavg()
  times = {}
  ours = theirs = None
  for _ in range(args.repeats):  # interleaved, so both see the same machine load
    ours, t, c = _timed(lambda: pqm.pq_compute(**files, num_workers=args.num_workers,
                                               progress=False))
    times.setdefault("ours", []).append((t, c))
    if args.cli:
      cmd = [sys.executable, "-m", "evaluation.panoptic_quality"] + [
          f"--{k}={v}" for k, v in files.items()]
      _, t, c = _timed(lambda: subprocess.run(
          cmd, check=True, capture_output=True,
          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
      times.setdefault("ours_cli", []).append((t, c))
    folders = [files["gt_folder"], files["pred_folder"]]
    _, t, c = _timed(lambda: _decode_only(folders))
    times.setdefault("ours_read_pngs_only_1thread", []).append((t, c))
    _, t, c = _timed(lambda: _decode_only(folders, pillow=True))
    times.setdefault("pillow_read_pngs_only_1thread", []).append((t, c))
    result, t, c = _timed(lambda: _panopticapi(files))
    if result is None:
      print(json.dumps({"impl": "panopticapi", "skipped": "not importable"}))
      break
    theirs = result
    times.setdefault("panopticapi_single_process", []).append((t, c))
  for impl, tc in times.items():
    print(json.dumps({"impl": impl, "repeats": len(tc),
                      "workers": (args.num_workers or os.cpu_count())
                      if impl in ("ours", "ours_cli") else 1,
                      "seconds_median": round(_median([t for t, _ in tc]), 3),
                      "seconds_all": [round(t, 3) for t, _ in tc],
                      "cpu_seconds_median": round(_median([c for _, c in tc]), 3)}),
          flush=True)
  summary = {"pq_ours": ours["All"]["pq"], "n": ours["All"]["n"],
             "loadavg_before": [round(x, 2) for x in load_before],
             "loadavg_after": [round(x, 2) for x in os.getloadavg()],
             "cpus": os.cpu_count()}
  if theirs is not None:
    t_ours = _median([t for t, _ in times["ours"]])
    t_theirs = _median([t for t, _ in times["panopticapi_single_process"]])
    c_ours = _median([c for _, c in times["ours"]])
    c_theirs = _median([c for _, c in times["panopticapi_single_process"]])
    summary.update({
        "speedup": round(t_theirs / t_ours, 2),
        "cpu_time_ratio": round(c_theirs / max(c_ours, 1e-9), 2),
        "ms_per_pair_ours": round(1000 * t_ours / args.num_images, 2),
        "ms_per_pair_panopticapi": round(1000 * t_theirs / args.num_images, 2),
        "max_abs_diff": _max_diff(ours, theirs),
        "identical": bool(_max_diff(ours, theirs) == 0)})
    if "ours_cli" in times:
      summary["speedup_cli"] = round(t_theirs / _median([t for t, _ in times["ours_cli"]]),
                                     2)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()
