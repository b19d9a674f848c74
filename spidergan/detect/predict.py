"""The `detect` stage: run the detector over `data/raw/` and write `data/detections.jsonl`.

Each record: {"id", "status": "ok"|"error", "reason"?, "boxes": [{"box": [x0, y0, x1, y1],
"conf", "cls": 0}]} with boxes in source pixels. An image without a detection is `ok` with no
boxes (a result, not an error); a missing or corrupt image is `error` with the reason.

Results are cached per image in `.spidergan/cache/detect/`, keyed by the image's SHA-256 within
a file keyed by the model's SHA-256 and the prediction params (conf, iou, max_det, imgsz,
augment, nested_suppress). New raw images therefore run alone, and a re-run with nothing new
reads the cache without loading the model (seconds). A killed run keeps every finished batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spidergan import atomic, env, images, manifest
from spidergan.detect import quality
from spidergan.detect.model import Detector
from spidergan.digest import file_sha256
from spidergan.params import DetectParams

log = logging.getLogger(__name__)


def cache_file(cache_dir: Path, model_hash: str, p: DetectParams) -> Path:
    key = json.dumps({"conf": p.conf, "iou": p.iou, "max_det": p.max_det, "imgsz": p.imgsz,
                      "nested_suppress": p.nested_suppress, "augment": p.augment},
                     sort_keys=True)
    return cache_dir / f"{model_hash[:16]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.jsonl"


def run(p: DetectParams, *, raw_dir: str | Path, model_path: str | Path, out: str | Path,
        cache_dir: str | Path | None = None, labels_path: str | Path | None = None,
        metrics_path: str | Path | None = None,
        failures_png: str | Path | None = None) -> dict:
    """Detect spiders on every raw image; returns (and writes) the counts and quality."""
    t0, c0 = time.time(), time.process_time()
    raw_dir = Path(raw_dir)
    cache_dir = Path(cache_dir) if cache_dir else env.state_dir() / "cache" / "detect"
    cache_dir.mkdir(parents=True, exist_ok=True)
    records = manifest.read(raw_dir / "manifest.jsonl")
    model_hash = file_sha256(model_path)
    cpath = cache_file(cache_dir, model_hash, p)
    cache = {r["sha256"]: r for r in manifest.iter_records(cpath)}
    results: dict[str, dict] = {}
    pending = []
    counts = {"images": len(records), "cached": 0, "predicted": 0}
    for rec in records:
        path = raw_dir / rec["file"]
        try:
            data = path.read_bytes()
        except OSError as e:
            results[rec["id"]] = {"id": rec["id"], "status": "error", "reason": "missing",
                                  "detail": str(e), "boxes": []}
            continue
        sha = hashlib.sha256(data).hexdigest()
        hit = cache.get(sha)
        if hit is not None:
            counts["cached"] += 1
            results[rec["id"]] = _record(rec["id"], hit)
        else:
            pending.append((rec["id"], sha, path))  # read again when decoded: memory stays flat
    if pending:
        detector = Detector(model_path, p)
        chunks = [pending[k:k + p.predict_batch] for k in range(0, len(pending), p.predict_batch)]
        # the next batch is read and decoded in a thread while this one predicts (decoding
        # releases the GIL), so validation costs no wall time beside inference
        with manifest.Appender(cpath, fsync=False) as app, ThreadPoolExecutor(1) as pool, \
                tqdm(total=len(pending), desc="detect", unit="img") as bar:
            nxt = pool.submit(_decode, chunks[0])
            for n, chunk in enumerate(chunks):
                decoded = nxt.result()
                if n + 1 < len(chunks):
                    nxt = pool.submit(_decode, chunks[n + 1])
                entries, ok = [], []
                for iid, sha, item in decoded:
                    if isinstance(item, images.ImageRejected):
                        entries.append({"sha256": sha, "status": "error", "reason": item.reason,
                                        "detail": item.detail})
                        results[iid] = _record(iid, entries[-1])
                    else:
                        ok.append((iid, sha, item))
                if ok:
                    for (iid, sha, _), boxes in zip(ok, detector.predict([d[2] for d in ok])):
                        entries.append({"sha256": sha, "status": "ok", "boxes": boxes})
                        results[iid] = _record(iid, entries[-1])
                for e in entries:
                    app.append(e)
                counts["predicted"] += len(chunk)
                bar.update(len(chunk))
    ordered = [results[r["id"]] for r in records]
    manifest.write(out, ordered)
    counts["ok"] = sum(r["status"] == "ok" for r in ordered)
    counts["errors"] = sum(r["status"] == "error" for r in ordered)
    counts["no_detection"] = sum(r["status"] == "ok" and not r["boxes"] for r in ordered)
    counts["boxes"] = sum(len(r["boxes"]) for r in ordered)
    counts["errors_by_reason"] = {}
    for r in ordered:
        if r["status"] == "error":
            counts["errors_by_reason"][r["reason"]] = counts["errors_by_reason"].get(r["reason"], 0) + 1
            log.warning("detect: %s skipped: %s %s", r["id"], r["reason"], r.get("detail", ""))
    counts["seconds"] = round(time.time() - t0, 2)
    counts["cpu_seconds"] = round(time.process_time() - c0, 2)
    if metrics_path or failures_png:
        q = quality.heldout_quality(raw_dir, ordered, labels_path, failures_png)
        if q is not None:
            counts["heldout"] = q
    if metrics_path:
        atomic.write_metrics(metrics_path, counts)
    from spidergan import outcome

    if not counts["ok"]:
        outcome.refuse_empty("detect", f"no image could be read of {len(records)}",
                             counts["errors_by_reason"] or {"no images in the raw manifest": 1})
    outcome.summary("detect", f"{counts['ok'] - counts['no_detection']} of {len(records)} images "
                    f"with a spider box ({counts['boxes']} boxes at conf >= {p.conf}), "
                    f"{counts['no_detection']} without", counts["errors_by_reason"])
    if "heldout" in counts:
        h = counts["heldout"]
        print(f"detect: held-out quality on {h['images']} images ({h['spiders']} spiders): "
              f"precision {h['precision']}, recall {h['recall']}, mAP50 {h['map50']}; spider-free "
              f"images with a box {h['spider_free_boxed']} of {h['spider_free_images']}"
              + (f" (the true share may be up to {h['spider_free_box_rate_upper95']:.0%}, 95% bound)"
                 if h["spider_free_images"] else ""))
    return counts


def _decode(chunk):
    """[(id, sha, RGB array or ImageRejected)] for a chunk of (id, sha, path)."""
    out = []
    for iid, sha, path in chunk:
        try:
            out.append((iid, sha, np.asarray(images.load_rgb(path))))
        except images.ImageRejected as e:
            out.append((iid, sha, e))
    return out


def _record(iid: str, entry: dict) -> dict:
    rec = {"id": iid, "status": entry["status"], "boxes": entry.get("boxes", [])}
    if entry["status"] == "error":
        rec["reason"] = entry.get("reason", "error")
        if entry.get("detail"):
            rec["detail"] = entry["detail"]
    return rec
