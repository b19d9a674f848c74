"""Detector variants: train one configuration on the demo's labelled images and print its
held-out mAP50 and training time, so a change of model or recipe can be judged against the
committed params before it is committed.

    python bench/detect_variants.py                          (the committed params)
    python bench/detect_variants.py epochs=70 model=yolo11n.yaml precision=fp32
    python bench/detect_variants.py --ultra scale=0.25 --ultra cutmix=0.3

Needs `dvc repro scrape` (synthetic source). `key=value` overrides a `detect` param (validated
like params.yaml); `--ultra key=value` passes an Ultralytics train argument that is not a param.
Labels, split and seed are the train_detector stage's; nothing is cached or written outside a
temporary folder. mAP50 is measured on the never-labelled images against the ground truth, with
the stage's Detector, twice: boxes down to confidence 0.001 (the usual protocol) and at
`detect.conf` (what the detect stage keeps). Training runs on one process; on a shared machine
compare train seconds only between runs made under the same load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spidergan import env, manifest, params  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="detect param overrides, key=value")
    ap.add_argument("--ultra", action="append", default=[], help="Ultralytics train argument")
    ap.add_argument("--raw", default=str(ROOT / "data/raw"), help="a synthetic data/raw to use")
    ap.add_argument("--keep", default=None, help="also copy the trained weights here")
    ap.add_argument("--negatives", type=int, default=200,
                    help="fresh spider-free synthetic photos (another seed) to count false boxes on")
    args = ap.parse_args()
    env.setup(ROOT)
    loaded = params.load(ROOT / "params.yaml")
    try:
        loaded = params.override(loaded, [f"detect.{kv}" for kv in args.overrides])
    except params.ParamsError as e:
        raise SystemExit(str(e)) from None
    p = loaded.detect
    # typed as YAML reads them, like param overrides
    extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.ultra)}

    from spidergan.detect import quality as q
    from spidergan.detect import train as T

    raw = Path(args.raw)
    records = manifest.read_by_id(raw / "manifest.jsonl")
    truth = manifest.read_by_id(raw / "truth.jsonl")
    if not records or not truth:
        print("needs the synthetic source's data/raw with its ground truth: dvc repro scrape")
        return 1
    labels = T.synthetic_labels(raw, p.labeled, loaded.seed)
    train_ids, val_ids = T.split(labels, p.val_fraction, loaded.seed)
    held = sorted(i for i in records if i not in labels and i in truth)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_yaml = T.build_dataset(work / "dataset", raw, records,
                                    {i: labels[i] for i in train_ids}, {i: labels[i] for i in val_ids})
        t0, c0 = time.perf_counter(), time.process_time()
        weights, _ = T.fit(T.resolve_model(p.model), data_yaml, p, p.epochs, loaded.seed,
                           work / "runs", "variant", extra)
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        boxes = {d["id"]: d["boxes"] for d in q.predict_ids(weights, p, raw, held, conf=0.001)}
        fresh = fresh_negatives(weights, p, loaded, args.negatives)
        if args.keep:
            import shutil

            shutil.copyfile(weights, args.keep)
    shown = {k: v for k, v in params.to_dict(p).items() if k != "selftrain"}
    print(f"detect params: {json.dumps(shown)}" + (f"; Ultralytics: {extra}" if extra else ""))
    print(f"training {train_s:.1f} s ({train_cpu:.1f} s CPU), {p.epochs} epochs")
    for conf in (0.001, p.conf):
        dets = [{"id": i, "status": "ok", "boxes": [b for b in bs if b["conf"] >= conf]}
                for i, bs in boxes.items()]
        fig, _ = q.evaluate(dets, truth, held)
        print(f"held-out mAP50 {fig['map50']:.3f} with boxes down to confidence {conf} "
              f"({fig['images']} images, {fig['spiders']} spiders; precision {fig['precision']}, "
              f"recall {fig['recall']})")
    print(f"held-out spider-free photos with a box at conf {p.conf}: {fig['spider_free_boxed']} "
          f"of {fig['spider_free_images']} (rate {fig['spider_free_box_rate']}; goal <= 0.05)")
    for name, confs in fresh.items():
        n_boxed = sum(c >= p.conf for c in confs)
        print(f"{name}: {n_boxed} of {len(confs)} get a box at conf {p.conf} "
              f"(rate {n_boxed / max(1, len(confs)):.3f}; highest conf {max(confs, default=0):.2f})")
    # what another detect.conf would trade: recall against spider-free photos with a box
    fresh_photos = next(iter(fresh.values()))
    print("conf   recall  held-out spider-free boxed  fresh spider-free boxed")
    for conf in (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6):
        dets = [{"id": i, "status": "ok", "boxes": [b for b in bs if b["conf"] >= conf]}
                for i, bs in boxes.items()]
        f, _ = q.evaluate(dets, truth, held)
        print(f"{conf:<6} {f['recall']:<7} {f['spider_free_boxed']}/{f['spider_free_images']:<24} "
              f"{sum(c >= conf for c in fresh_photos)}/{len(fresh_photos)}")
    if args.keep:
        print(f"weights kept in {args.keep}")
    return 0


def fresh_negatives(weights, p, loaded, count: int) -> dict:
    """{set name: each picture's highest box confidence (0 without a box)} on spider-free
    pictures the detector never saw: `count` synthetic photos drawn with another seed and
    empty_fraction 1 (background, web, distractor only), and four pictures that are no photo at
    all (plain white, plain grey, uniform noise, a blurred dark disc on white, 224 px)."""
    import dataclasses

    import cv2
    import numpy as np

    from spidergan.detect.predict import Detector
    from spidergan.sources import synthetic

    det = Detector(weights, p, conf=0.001)
    out = {}
    sp = dataclasses.replace(loaded.scrape.synthetic, count=count, empty_fraction=1.0,
                             dup_fraction=0.0)
    confs = []
    for item in synthetic.generate(sp, loaded.seed + 7919):
        if any(o.cls == "spider" for o in item.objects):
            continue
        bgr = cv2.imdecode(np.frombuffer(item.jpeg, np.uint8), cv2.IMREAD_COLOR)
        boxes = det.predict([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])[0]
        confs.append(max([b["conf"] for b in boxes], default=0.0))
    out[f"fresh spider-free synthetic photos (seed {loaded.seed + 7919})"] = confs
    rng = np.random.default_rng(0)
    disc = np.full((224, 224, 3), 255, np.uint8)
    cv2.circle(disc, (112, 112), 60, (30, 25, 20), -1)
    plain = {"white": np.full((224, 224, 3), 255, np.uint8),
             "grey": np.full((224, 224, 3), 128, np.uint8),
             "noise": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
             "dark disc": cv2.GaussianBlur(disc, (0, 0), 8)}
    confs = [max([b["conf"] for b in det.predict([a])[0]], default=0.0) for a in plain.values()]
    out["no photo (" + ", ".join(f"{k} {c:.2f}" for k, c in zip(plain, confs)) + ")"] = confs
    return out


if __name__ == "__main__":
    sys.exit(main())
