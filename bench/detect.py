"""Detector benchmark: held-out quality, detect-stage throughput against a bare predict loop, and
the time of a cached re-run.

    python bench/detect.py            (after `dvc repro detect`; uses models/detector.pt, data/raw)

1. mAP50 on the synthetic images that were never labelled, against their ground truth
   (goal >= 0.90): from data/detections.jsonl as the detect stage wrote it (boxes at or above
   `detect.conf`, which cuts the precision-recall curve short), and by the usual protocol
   (Ultralytics val, COCO): the same model and params with every box down to confidence 0.001.
2. Images per second of `spidergan.detect.predict.run` (hashing, validation, cache, JSONL) with an
   empty cache, against `model.predict(path)` over the same files (goal: overhead <= 10%). Both
   include loading the model; each runs three times, interleaved, and the fastest run counts,
   since the machine may be shared.
3. A re-run with nothing new (everything from the cache).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spidergan import device, env, manifest, params  # noqa: E402


def quality(raw: Path, labels: Path, detections: Path) -> None:
    from spidergan.detect import quality as q

    if not detections.exists() or not labels.exists():
        print(f"quality: {detections} or {labels} missing; run `dvc repro detect` first")
        return
    fig = q.heldout_quality(raw, manifest.read(detections), labels, None)
    if fig is None:
        print("quality: no ground truth (not the synthetic source); skipped")
        return
    ok = fig["map50"] is not None and fig["map50"] >= 0.90
    print(f"held-out mAP50 {fig['map50']:.3f} on {fig['images']} never-labelled images "
          f"({fig['spiders']} spiders) (goal >= 0.90: {'met' if ok else 'NOT met'}); "
          f"precision {fig['precision']}, recall {fig['recall']}, missed {fig['missed']}, "
          f"double {fig['double_boxes']}, on distractors {fig['distractor_boxes']}, "
          f"on background {fig['false_boxes']}")


def standard_map(p, raw: Path, labels: Path, model: Path, conf: float = 0.001) -> None:
    """Held-out mAP50 with boxes down to `conf` (the usual protocol)."""
    from spidergan.detect import quality as q

    if not labels.exists() or not model.exists():
        return
    dets = q.predict_ids(model, p, raw, list(manifest.read_by_id(raw / "manifest.jsonl")), conf)
    fig = q.heldout_quality(raw, dets, labels, None)  # keeps the never-labelled ones
    if fig is None:
        return
    ok = fig["map50"] is not None and fig["map50"] >= 0.90
    print(f"held-out mAP50 {fig['map50']:.3f} with boxes down to confidence {conf} (the usual "
          f"protocol; goal >= 0.90: {'met' if ok else 'NOT met'})")


def speed(p, raw: Path, model: Path, limit: int) -> None:
    from spidergan.detect import predict

    recs = manifest.read(raw / "manifest.jsonl")[:limit]
    files = [raw / r["file"] for r in recs]
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "raw"
        (sub / "images").mkdir(parents=True)
        for r in recs:  # the same files, through a manifest of just these
            (sub / r["file"]).symlink_to((raw / r["file"]).resolve())
        manifest.write(sub / "manifest.jsonl", recs)

        def ours(cache: Path) -> float:
            t = time.perf_counter()
            predict.run(p, raw_dir=sub, model_path=model, out=Path(tmp) / "det.jsonl",
                        cache_dir=cache, labels_path=None, metrics_path=None, failures_png=None)
            return time.perf_counter() - t

        def bare() -> float:
            from spidergan.detect.model import load_yolo  # the same torch threads as the stage

            t = time.perf_counter()
            m = load_yolo(model, p.threads)
            for f in files:
                m.predict(str(f), imgsz=p.imgsz, conf=p.conf, iou=p.iou, max_det=p.max_det,
                          device=device.ultralytics_arg(p.device), verbose=False)
            return time.perf_counter() - t

        bare()  # warm-up: imports, first-call costs
        t_bare, t_ours = [], []
        for k in range(3):  # interleaved, so a burst of load from elsewhere hits both
            t_bare.append(bare())
            t_ours.append(ours(Path(tmp) / f"c{k}"))
        t_bare, t_ours = min(t_bare), min(t_ours)
        t_cached = ours(Path(tmp) / "c0")
    n = len(files)
    over = (t_ours / t_bare - 1) * 100
    print(f"detect stage {n / t_ours:.1f} img/s, bare model.predict loop {n / t_bare:.1f} img/s, "
          f"ratio {t_bare / t_ours:.2f}x, overhead {over:+.1f}% (goal <= 10%: "
          f"{'met' if over <= 10 else 'NOT met'}) over {n} images")
    print(f"cached re-run {t_cached:.2f} s for {n} images, {t_ours / t_cached:.0f}x faster than "
          f"uncached ({t_ours:.1f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200, help="images for the speed runs")
    args = ap.parse_args()
    env.setup(ROOT)
    p = params.load(ROOT / "params.yaml").detect
    raw, model = ROOT / "data/raw", ROOT / "models/detector.pt"
    quality(raw, ROOT / "data/detector/labels.jsonl", ROOT / "data/detections.jsonl")
    standard_map(p, raw, ROOT / "data/detector/labels.jsonl", model)
    if not model.exists():
        print(f"speed: {model} missing; run `dvc repro train_detector` first")
        return 1
    speed(p, raw, model, args.limit)
    import os

    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
