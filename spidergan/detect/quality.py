"""Detector quality against ground truth (synthetic source) and a contact sheet of its failures.

Measured only on images that were never labelled (not in `data/detector/labels.jsonl`), so the
figure says how the detector does on images it has not learnt from. Ground-truth spiders are
the objects with cls "spider"; caterpillars and leaves are distractors a box must not land on.

Failures at the stage's confidence threshold, per image:
* missed      a spider no box matches (IoU >= 0.5)
* double      a second box on an already matched spider, or a box mostly inside or around it:
              the "inner and outer spider" an inconsistently labelled detector learns
* loose       the only box on a spider, but too large or too small to match it (IoU < 0.5)
* distractor  a box on a caterpillar or leaf
* false_box   a box on background
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import ImageDraw

from spidergan import atomic, images, manifest, sheets
from spidergan.boxes import ioa, iou  # noqa: F401 (ioa: quality.ioa)
from spidergan.detect.model import Detector
from spidergan.metrics import proportion

IOU_MATCH = 0.5


def average_precision(preds: dict, gts: dict, iou_thr: float = IOU_MATCH) -> float:
    """AP at `iou_thr` over images: preds {id: [(box, conf)]}, gts {id: [box]} (all-point interp.)."""
    n_gt = sum(len(v) for v in gts.values())
    if n_gt == 0:
        return float("nan")
    flat = sorted(((c, iid, b) for iid, ps in preds.items() for b, c in ps), key=lambda t: -t[0])
    used = {iid: [False] * len(g) for iid, g in gts.items()}
    tp = np.zeros(len(flat))
    for k, (_, iid, b) in enumerate(flat):
        g = gts.get(iid, [])
        best, best_j = iou_thr, -1
        for j, gb in enumerate(g):
            v = iou(b, gb)
            if v >= best and not used[iid][j]:
                best, best_j = v, j
        if best_j >= 0:
            used[iid][best_j] = True
            tp[k] = 1
    if not len(flat):
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(flat) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def classify(dets: list[dict], spiders: list, distractors: list) -> dict:
    """Match one image's boxes to its ground truth; returns the failure lists."""
    matched = [False] * len(spiders)
    out = {"tp": [], "double": [], "loose": [], "distractor": [], "false_box": [], "missed": []}
    for d in sorted(dets, key=lambda d: -d["conf"]):
        b = d["box"]
        best, best_j = IOU_MATCH, -1
        for j, s in enumerate(spiders):
            v = iou(b, s)
            if v >= best and not matched[j]:
                best, best_j = v, j
        if best_j >= 0:
            matched[best_j] = True
            out["tp"].append(b)
        elif any(m and (iou(b, s) >= IOU_MATCH or ioa(b, s) >= 0.7) for s, m in zip(spiders, matched)):
            out["double"].append(b)
        elif any(ioa(b, s) >= 0.7 for s in spiders):
            out["loose"].append(b)
        elif any(iou(b, x) >= 0.3 or ioa(b, x) >= 0.5 for x in distractors):
            out["distractor"].append(b)
        else:
            out["false_box"].append(b)
    out["missed"] = [s for s, m in zip(spiders, matched) if not m]
    return out


def evaluate(detections: list[dict], truth: dict, ids) -> tuple[dict, list]:
    """Quality over `ids`: (figures, failure items for the contact sheet)."""
    dets = {r["id"]: r for r in detections}
    preds, gts, fails = {}, {}, []
    totals = {"missed": 0, "double": 0, "loose": 0, "distractor": 0, "false_box": 0, "tp": 0}
    n_boxes = 0
    free = free_boxed = 0  # spider-free images, and those of them that got a box
    ids = [i for i in sorted(ids) if i in truth and dets.get(i, {}).get("status") == "ok"]
    for iid in ids:
        objs = truth[iid].get("objects", [])
        spiders = [o["box"] for o in objs if o.get("cls") == "spider"]
        distractors = [o["box"] for o in objs if o.get("cls") != "spider"]
        boxes = dets[iid]["boxes"]
        n_boxes += len(boxes)
        preds[iid] = [(b["box"], b["conf"]) for b in boxes]
        gts[iid] = spiders
        if not spiders:
            free += 1
            free_boxed += bool(boxes)
        c = classify(boxes, spiders, distractors)
        for k in totals:
            totals[k] += len(c[k])
        if any(c[k] for k in ("missed", "double", "loose", "distractor", "false_box")):
            fails.append({"id": iid, **c, "distractors": distractors})
    n_gt = sum(len(v) for v in gts.values())
    figures = {"images": len(ids), "spiders": n_gt, "boxes": n_boxes,
               "map50": round(average_precision(preds, gts), 4) if n_gt else None,
               "precision": round(totals["tp"] / n_boxes, 4) if n_boxes else None,
               "recall": round(totals["tp"] / n_gt, 4) if n_gt else None,
               "missed": totals["missed"], "double_boxes": totals["double"],
               "loose_boxes": totals["loose"],
               "distractor_boxes": totals["distractor"], "false_boxes": totals["false_box"],
               "failure_images": len(fails),
               "spider_free_images": free, "spider_free_boxed": free_boxed,
               "spider_free_box_rate": round(free_boxed / free, 4) if free else None,
               # few spider-free photos cannot show a low rate: 0 of 15 still allows 18%
               "spider_free_box_rate_upper95": round(proportion.upper_bound(free_boxed, free), 4)
               if free else None}
    return figures, fails


COLORS = {"truth": (40, 200, 40), "distractors": (60, 120, 255), "tp": (255, 220, 0),
          "missed": (0, 255, 0), "double": (255, 0, 255), "loose": (0, 230, 230),
          "distractor": (255, 60, 0),
          "false_box": (255, 0, 0)}


def contact_sheet(raw_dir, fails: list, path, tile: int = 192, cols: int = 6,
                  max_tiles: int = 36) -> int:
    """PNG of failure images: green = missed spider, magenta = double box, cyan = loose box (a
    spider's only box, badly sized), orange = box on a distractor (blue), red = box on background,
    yellow = correct box. Returns tiles drawn."""
    raw = manifest.read_by_id(Path(raw_dir) / "manifest.jsonl")
    kinds = ("missed", "double", "loose", "distractor", "false_box")
    order = sorted(fails, key=lambda f: -sum(len(f[k]) for k in kinds))
    tiles, tags = [], []
    for f in order[:max_tiles]:
        rec = raw.get(f["id"])
        try:
            im = images.load_rgb(Path(raw_dir) / rec["file"])
        except (images.ImageRejected, TypeError):
            continue
        s = tile / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))))
        d = ImageDraw.Draw(im)
        for kind in ("distractors", "tp") + kinds:
            for b in f.get(kind, []):
                d.rectangle([v * s for v in b], outline=COLORS[kind], width=2)
        tiles.append(im)
        tags.append(f"{f['id'][:14]} " + " ".join(f"{k}{len(f[k])}" for k in kinds if f[k]))
    sheet = sheets.grid(tiles, cols=cols, cell=tile, labels=tags) if tiles \
        else sheets.message("no failures", tile * 2)
    atomic.save_image(path, sheet)
    return len(tiles)


def predict_ids(weights, p, raw_dir, ids, conf: float = 0.001) -> list[dict]:
    """Detections of images `ids` of `raw_dir`, shaped as the detect stage records them, with
    every box down to `conf`: the usual (Ultralytics val, COCO) protocol for mAP, where the
    stage keeps only boxes above `detect.conf`. Through the stage's own Detector (same imgsz,
    NMS and nested-box suppression); unreadable images are left out."""
    raw_dir = Path(raw_dir)
    records = manifest.read_by_id(raw_dir / "manifest.jsonl")
    det = Detector(weights, p, conf=conf)
    out = []
    for iid in ids:
        try:
            rgb = np.asarray(images.load_rgb(raw_dir / records[iid]["file"]))
        except images.ImageRejected:
            continue
        out.append({"id": iid, "status": "ok", "boxes": det.predict([rgb])[0]})
    return out


def heldout_quality(raw_dir, detections: list[dict], labels_path, failures_png) -> dict | None:
    """Quality on images the detector never learnt from, when there is something to compare
    with: on the synthetic source the never-labelled images against the ground truth; on a real
    source the hand-labelled images `detect.holdout` kept out of training (split "holdout" in
    `data/detector/labels.jsonl`; no distractor classes there, so every box off a labelled
    spider counts as a false box). Else None, and a placeholder sheet saying why (the declared
    plot always exists)."""
    raw_dir = Path(raw_dir)
    truth = manifest.read_by_id(raw_dir / "truth.jsonl")
    labels = manifest.read_by_id(labels_path) if labels_path else {}
    if truth:
        ids = [r["id"] for r in detections if r["id"] not in labels]
    else:
        truth = {i: {"objects": [{"cls": "spider", "box": b} for b in r.get("boxes", [])]}
                 for i, r in labels.items() if r.get("split") == "holdout"}
        ids = sorted(truth)
    if not ids:
        if failures_png:
            atomic.save_image(failures_png, sheets.message(
                "nothing to measure on: no ground truth and no held-out labels (detect.holdout)", 520))
        return None
    figures, fails = evaluate(detections, truth, ids)
    if failures_png:
        contact_sheet(raw_dir, fails, failures_png)
    return figures
