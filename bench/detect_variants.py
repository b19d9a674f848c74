"""Detector variants: train one configuration on the demo's labelled images and print its
held-out mAP50 and training time, so a change of model or recipe can be judged against the
committed params before it is committed.

    python bench/detect_variants.py                          (the committed params)
    python bench/detect_variants.py epochs=70 model=yolo11n.yaml precision=fp32
    python bench/detect_variants.py --ultra scale=0.25 --ultra cutmix=0.3
    python bench/detect_variants.py --weights W.pt augment=false  (measure kept weights, no training)

Needs `dvc repro scrape` (synthetic source). `key=value` overrides a `detect` param (validated
like params.yaml); `--ultra key=value` passes an Ultralytics train argument that is not a param.
Labels, split and seed are the train_detector stage's; nothing is cached or written outside a
temporary folder. mAP50 is measured on the never-labelled images against the ground truth, with
the stage's Detector, twice: boxes down to confidence 0.001 (the usual protocol) and at
`detect.conf` (what the detect stage keeps). Then, on pictures no run ever saw (another seed):
spider-free photos with a box, recall on photos with spiders, and the trade-off of the two per
confidence threshold, since held-out has only ~20 spider-free photos. Prediction follows
`detect.augment` like the stage. Training runs on one process; on a shared machine compare
train seconds only between runs made under the same load.
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
    ap.add_argument("--weights", default=None,
                    help="measure these weights (e.g. a --keep of an earlier run) instead of training")
    ap.add_argument("--fresh", type=int, default=1000,
                    help="fresh synthetic photos (another seed, the committed mix of spiders, "
                         "spider-free photos and distractors) to measure recall and false boxes on")
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
        t0, c0 = time.perf_counter(), time.process_time()
        if args.weights:
            weights = Path(args.weights)
        else:
            data_yaml = T.build_dataset(work / "dataset", raw, records, {i: labels[i] for i in train_ids},
                                        {i: labels[i] for i in val_ids})
            weights, _ = T.fit(T.resolve_model(p.model), data_yaml, p, p.epochs, loaded.seed,
                               work / "runs", "variant", extra)
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        held_dets = q.predict_ids(weights, p, raw, held, conf=0.001)
        from spidergan.detect.model import Detector

        det = Detector(weights, p, conf=0.001)
        fresh_dets, fresh_truth = fresh_photos(det, loaded, args.fresh)
        blank = no_photos(det)
        if args.keep:
            import shutil

            shutil.copyfile(weights, args.keep)
    shown = {k: v for k, v in params.to_dict(p).items() if k != "selftrain"}
    print(f"detect params: {json.dumps(shown)}" + (f"; Ultralytics: {extra}" if extra else ""))
    print(f"weights {args.weights} (not trained here)" if args.weights else
          f"training {train_s:.1f} s ({train_cpu:.1f} s CPU), {p.epochs} epochs")
    for conf in (0.001, p.conf):
        fig, _ = q.evaluate(at_conf(held_dets, conf), truth, held)
        print(f"held-out mAP50 {fig['map50']:.3f} with boxes down to confidence {conf} "
              f"({fig['images']} images, {fig['spiders']} spiders; precision {fig['precision']}, "
              f"recall {fig['recall']})")
    print(f"held-out spider-free photos with a box at conf {p.conf}: {fig['spider_free_boxed']} "
          f"of {fig['spider_free_images']} (rate {fig['spider_free_box_rate']}; goal <= 0.05)")
    print("no photo (" + ", ".join(f"{k} {c:.2f}" for k, c in blank.items()) + f"): "
          f"{sum(c >= p.conf for c in blank.values())} of {len(blank)} get a box at conf {p.conf}")
    # what another detect.conf would trade: recall against spider-free photos with a box
    fresh_ids = list(fresh_truth)
    print(f"fresh synthetic photos (seed {loaded.seed + 7919}, duplicates off): {len(fresh_ids)}")
    print("conf   held-out: recall  spider-free boxed | fresh: recall (spiders)  spider-free boxed"
          "  (of them with a distractor)")
    # spider-free photos holding a caterpillar or leaf: where the detector fails most
    alone = {i for i, t in fresh_truth.items()
             if t["objects"] and not any(o["cls"] == "spider" for o in t["objects"])}
    for conf in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6):
        f, _ = q.evaluate(at_conf(held_dets, conf), truth, held)
        kept = at_conf(fresh_dets, conf)
        fp, _ = q.evaluate(kept, fresh_truth, fresh_ids)
        print(f"{conf:<6} {f['recall']:<15} {f['spider_free_boxed']:>3}/{f['spider_free_images']:<13} | "
              f"{fp['recall']:<7} ({fp['spiders']})       {fp['spider_free_boxed']:>3}/"
              f"{fp['spider_free_images']} ({fp['spider_free_box_rate']:.3f})"
              f"     {sum(bool(d['boxes']) for d in kept if d['id'] in alone)}/{len(alone)}")
    if args.keep:
        print(f"weights kept in {args.keep}")
    return 0


def at_conf(dets: list[dict], conf: float) -> list[dict]:
    """Detection records with only the boxes at `conf` or above: what the stage keeps at it."""
    return [{**d, "boxes": [b for b in d["boxes"] if b["conf"] >= conf]} for d in dets]


def fresh_photos(det, loaded, count: int) -> tuple[list, dict]:
    """`det`'s detections (main builds it at conf 0.001) and the ground truth on `count`
    synthetic photos no run ever saw: drawn with another seed and the committed synthetic params
    (so spider-free photos, distractor-alone ones among them, come in the demo's proportions),
    duplicates off."""
    import dataclasses

    import numpy as np
    from tqdm import tqdm

    from spidergan import images
    from spidergan.sources import synthetic

    sp = dataclasses.replace(loaded.scrape.synthetic, count=count, dup_fraction=0.0)
    dets, truth = [], {}
    for item in tqdm(synthetic.generate(sp, loaded.seed + 7919), total=count, desc="fresh photos"):
        # decoded by the detect stage's own loader, as the held-out photos are
        boxes = det.predict([np.asarray(images.load_rgb(item.jpeg))])[0]
        dets.append({"id": item.id, "status": "ok", "boxes": boxes})
        truth[item.id] = {"objects": item.objects_json()}
    return dets, truth


def no_photos(det) -> dict:
    """{name: highest box confidence} on four pictures that are no photo at all (plain white,
    plain grey, uniform noise, a blurred dark disc on white, 224 px): the issue's examples."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    disc = np.full((224, 224, 3), 255, np.uint8)
    cv2.circle(disc, (112, 112), 60, (30, 25, 20), -1)
    plain = {"white": np.full((224, 224, 3), 255, np.uint8),
             "grey": np.full((224, 224, 3), 128, np.uint8),
             "noise": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
             "dark disc": cv2.GaussianBlur(disc, (0, 0), 8)}
    return {k: max([b["conf"] for b in det.predict([a])[0]], default=0.0) for k, a in plain.items()}


if __name__ == "__main__":
    sys.exit(main())
