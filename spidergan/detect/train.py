"""The `train_detector` stage: labels -> Ultralytics dataset -> YOLO detector -> metrics.

Steps:
1. Labels. `detect.labels_from: auto` takes them from the ground truth with the synthetic
   source (`detect.labeled` images drawn with the seed stand in for hand labelling) and from
   `data/labels/` otherwise (filled by hand or with `spidergan import-labels`). The labels
   actually used are written to `data/detector/labels.jsonl` (with their split and origin), so
   later stages and the benchmark know which images were never labelled.
2. A seeded train/val split (`detect.val_fraction`); the val split stays fixed through the
   self-training rounds so their metrics compare.
3. Training `detect.model`: a model YAML (e.g. `yolo11n.yaml`) trains from scratch and needs
   nothing from the internet; a `.pt` file fine-tunes pretrained weights (better with few
   labels, but it must be on disk: nothing is downloaded at run time).
4. Self-training rounds (see `selftrain`), each retraining and recording its metrics.

Ultralytics writes its run folders and the built dataset under `.spidergan/detect/`, never the
repo root. A training whose inputs (model, labels, split, params, seed) were trained before is
taken from there instead of retrained, so adding review decisions reruns only the rounds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

from spidergan import atomic, env, manifest, params
from spidergan import device as dev
from spidergan.detect import labels as L
from spidergan.detect import selftrain
from spidergan.detect.model import DetectorError, resolve_model
from spidergan.digest import file_sha256
from spidergan.params import DetectParams
from spidergan.review import decisions as review_decisions

log = logging.getLogger(__name__)

def amp_arg(precision: str, cpu: bool):
    """Ultralytics' `amp` train argument for `detect.precision` on this device.

    On a CPU with native bf16 (AVX512-BF16 or AMX) bf16 autocast trains the detector ~1.4x
    faster at the same quality (measured: 70 epochs 155 s against 221 s, held-out mAP50 0.65
    against 0.58); without native support bf16 is emulated and slower, hence `auto`."""
    if precision == "fp32":
        return False
    if not cpu:
        return "bf16" if precision == "bf16" else True
    if precision == "auto":
        import torch

        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    _allow_cpu_bf16_autocast()
    return "bf16"


def _allow_cpu_bf16_autocast() -> None:
    """Ultralytics accepts `amp="bf16"` but its autocast helper refuses bf16 off CUDA; torch
    itself supports CPU bf16 autocast. Wrap the helper the trainer imported (once)."""
    import torch
    from ultralytics.engine import trainer as T

    helper = getattr(T, "autocast", None)
    if helper is None:
        raise DetectorError("detect.precision bf16 on CPU: this Ultralytics version has no "
                            "trainer autocast helper to extend; set detect.precision: fp32")
    if getattr(helper, "_spidergan_cpu_bf16", False):
        return

    def autocast(enabled, device: str = "cuda"):
        if enabled is torch.bfloat16 and device == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return helper(enabled, device)

    autocast._spidergan_cpu_bf16 = True
    T.autocast = autocast


# --------------------------------------------------------------------------- labels
def synthetic_labels(raw_dir: str | Path, count: int, seed: int) -> dict:
    """Ground-truth spider boxes of `count` images drawn with `seed` (stand-in for hand labels).

    Distractors (caterpillars, leaves) are not labelled: they are the negatives the detector
    must learn to leave alone. Images without a spider still count as labelled negatives.
    """
    raw_dir = Path(raw_dir)
    truth = manifest.read_by_id(raw_dir / "truth.jsonl")
    if not truth:
        raise L.NoLabels(f"{raw_dir}/truth.jsonl is missing or empty: the synthetic labels come "
                         "from the ground truth of the synthetic source (scrape.source: synthetic)")
    ids = sorted(i for i, r in manifest.read_by_id(raw_dir / "manifest.jsonl").items()
                 if i in truth and (raw_dir / r["file"]).is_file())
    chosen = random.Random(f"labels-{seed}").sample(ids, min(count, len(ids)))
    return {i: [[float(v) for v in o["box"]] for o in truth[i].get("objects", [])
                if o.get("cls") == "spider"] for i in sorted(chosen)}


def gather_labels(p: DetectParams, source: str, seed: int, raw_dir, labels_dir):
    """({image id: boxes}, origin, rejects) for the configured label source."""
    mode = p.labels_from
    if mode == "auto":
        mode = "truth" if source == "synthetic" else "folder"
    if mode == "truth":
        return synthetic_labels(raw_dir, p.labeled, seed), "truth", []
    found, rejects = L.read_folder(labels_dir, raw_dir)
    if not found:
        msg = L.HOW_TO_LABEL.format(folder=str(labels_dir).rstrip("/"))
        if rejects:
            msg += f"\n({len(rejects)} label files were rejected, e.g. {rejects[0]['id']}: " \
                   f"{rejects[0]['reason']} {rejects[0]['detail']})"
        raise L.NoLabels(msg)
    return found, "human", rejects


def holdout_ids(labels: dict, fraction: float, seed: int) -> list:
    """A seeded `fraction` of the labelled images, kept out of training so that the detect
    stage can measure the detector on hand labels it never learnt from (at least one image
    once there are five; none when fraction is 0)."""
    ids = sorted(labels)
    n = round(len(ids) * fraction)
    if fraction > 0 and len(ids) >= 5:
        n = max(1, n)
    return sorted(random.Random(f"holdout-{seed}").sample(ids, n)) if n else []


def _count_reasons(rejects: list) -> str:
    counts: dict = {}
    for r in rejects:
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def split(ids, val_fraction: float, seed: int) -> tuple[list, list]:
    ids = sorted(ids)
    n_val = max(1, round(len(ids) * val_fraction)) if len(ids) >= 2 else 0
    val = set(random.Random(f"val-{seed}").sample(ids, n_val))
    return [i for i in ids if i not in val], sorted(val)


# --------------------------------------------------------------------------- dataset + training
def build_dataset(work: Path, raw_dir, records: dict, train: dict, val: dict) -> Path:
    """Write the Ultralytics layout (images/, labels/, dataset.yaml) under `work`; return the YAML.

    Images are hard-linked (copied across filesystems) so the layout costs no space.
    """
    if work.exists():
        shutil.rmtree(work)
    for name, subset in (("train", train), ("val", val)):
        (work / "images" / name).mkdir(parents=True)
        (work / "labels" / name).mkdir(parents=True)
        for iid, boxes in subset.items():
            rec = records[iid]
            src = Path(raw_dir) / rec["file"]
            dst = work / "images" / name / f"{iid}{src.suffix.lower()}"
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            L.write_label(work / "labels" / name, iid, boxes, int(rec["width"]), int(rec["height"]))
    yaml_path = work / "dataset.yaml"
    atomic.write_text(yaml_path, json.dumps({"path": str(work.resolve()), "train": "images/train",
                                             "val": "images/val", "names": {0: "spider"}}, indent=1))
    return yaml_path


def fit(model_src: str, data_yaml: Path, p: DetectParams, epochs: int, seed: int, run_dir: Path,
        name: str, extra: dict | None = None) -> tuple[Path, dict]:
    """Train one detector; returns (weights, val metrics). `extra`: further Ultralytics train
    arguments (bench/detect_variants.py tries augmentations that are not params)."""
    env.configure_ultralytics(p.threads)
    from ultralytics import YOLO

    device = dev.ultralytics_arg(p.device)
    cpu = device == "cpu"
    model = YOLO(model_src)
    model.train(data=str(data_yaml), epochs=epochs, imgsz=p.imgsz, batch=p.batch, device=device,
                workers=0 if cpu else 4, amp=amp_arg(p.precision, cpu), seed=seed, deterministic=True,
                project=str(run_dir), name=name, exist_ok=True, plots=False, val=False,
                verbose=False, optimizer=p.optimizer, lr0=p.lr0, warmup_epochs=p.warmup_epochs,
                mosaic=p.mosaic, close_mosaic=min(p.close_mosaic, epochs), flipud=p.flipud,
                # one optimizer step per batch: with ~100 images an epoch is a handful of batches,
                # and Ultralytics' nominal batch of 64 would leave a quarter as many steps
                nbs=p.batch,
                patience=max(epochs, 100), cache="ram", pretrained=model_src.endswith(".pt"),
                **(extra or {}))
    trainer = model.trainer
    weights = Path(trainer.best if Path(trainer.best).exists() else trainer.last)
    return weights, metrics_of(trainer.metrics)


def metrics_of(m: dict) -> dict:
    m = m or {}
    return {"map50": float(m.get("metrics/mAP50(B)", 0.0)),
            "map50_95": float(m.get("metrics/mAP50-95(B)", 0.0)),
            "precision": float(m.get("metrics/precision(B)", 0.0)),
            "recall": float(m.get("metrics/recall(B)", 0.0))}


def train_cached(model_src: str, base_hash: str, train: dict, val: dict, p: DetectParams,
                 epochs: int, seed: int, raw_dir, records: dict, work: Path, tag: str):
    """`fit`, unless the same inputs were trained before: then the stored result is reused."""
    key_src = json.dumps({"model": base_hash, "train": train, "val": val, "epochs": epochs,
                          "seed": seed, "p": params.to_dict(p), "files": {
                              i: records[i].get("sha256") for i in sorted({**train, **val})}},
                         sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    done = work / "trained" / f"{key}.pt"
    done_metrics = done.with_suffix(".json")
    if done.exists() and done_metrics.exists():
        log.info("train_detector: %s reused from %s", tag, done)
        return done, json.loads(done_metrics.read_text()), True
    data_yaml = build_dataset(work / "dataset", raw_dir, records, train, val)
    weights, metrics = fit(model_src, data_yaml, p, epochs, seed, work / "runs", tag)
    atomic.copy_file(weights, done)
    atomic.write_json(done_metrics, metrics)
    return done, metrics, False


# --------------------------------------------------------------------------- the stage
def run(p: DetectParams, source: str, seed: int, *, raw_dir: str | Path, labels_dir: str | Path,
        decisions: str | Path | None, out_model: str | Path, out_dir: str | Path,
        metrics_path: str | Path | None = None, work_dir: str | Path | None = None) -> dict:
    """Labels, training and self-training rounds; writes the model, label record and metrics.

    `work_dir` (default `.spidergan/detect`) holds the built dataset, Ultralytics' run folders
    and the finished trainings kept for reuse."""
    t0, c0 = time.time(), time.process_time()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    records = manifest.read_by_id(raw_dir / "manifest.jsonl")
    if not records:
        raise DetectorError(f"{raw_dir}/manifest.jsonl is missing or empty: run the scrape stage first")
    model_src = resolve_model(p.model)
    base_hash = file_sha256(model_src) if model_src.endswith(".pt") or Path(model_src).is_file() \
        else model_src
    labels, origin, rejects = gather_labels(p, source, seed, raw_dir, labels_dir)
    origins = {i: origin for i in labels}
    state = review_decisions.latest(decisions) if decisions else {}
    # a photo a person marked "no spider" is a background image to learn from, unless a label
    # file already says what is in it
    reviewed_negatives = sorted(i for i in review_decisions.no_spider_images(state)
                                if i in records and i not in labels)
    for i in reviewed_negatives:
        labels[i] = []
        origins[i] = "review"
    held = holdout_ids(labels, p.holdout, seed) if origin == "human" else []
    trainable = {i: b for i, b in labels.items() if i not in set(held)}
    n_pos = sum(1 for b in trainable.values() if b)
    reasons = _count_reasons(rejects)
    print(f"train_detector: {len(labels)} labelled images ({origin} labels: "
          f"{sum(1 for b in labels.values() if b)} with a spider, "
          f"{sum(1 for b in labels.values() if not b)} without, "
          f"{sum(map(len, labels.values()))} boxes; {len(reviewed_negatives)} marked no spider in "
          f"review); label files rejected: {len(rejects)}" + (f" ({reasons})" if reasons else ""))
    for r in rejects[:5]:
        print(f"  rejected {r['id']}: {r['reason']} {r.get('detail', '')}".rstrip())
    if n_pos < p.min_labels or len(trainable) < 2:
        raise L.NoLabels(
            f"only {n_pos} labelled images with a spider to train on"
            + (f" ({len(held)} more held out by detect.holdout {p.holdout})" if held else "")
            + f"; detect.min_labels is {p.min_labels}. A detector trained on a handful of boxes "
            "finds a spider in anything: label more photos (about 100), "
            + ("set detect.holdout: 0, " if held else "") + "or lower detect.min_labels knowingly."
            + (f" {len(rejects)} label files were rejected ({reasons})." if rejects else ""))
    train_ids, val_ids = split(trainable, p.val_fraction, seed)
    train = {i: labels[i] for i in train_ids}
    val = {i: labels[i] for i in val_ids}
    rounds_of = {i: 0 for i in labels}
    work = Path(work_dir) if work_dir else env.state_dir() / "detect"
    n_bg = sum(1 for b in train.values() if not b)
    print(f"train_detector: training on {len(train)} images ({len(train) - n_bg} with a spider, "
          f"{n_bg} background images without), {sum(map(len, train.values()))} boxes; validating "
          f"on {len(val)}" + (f"; {len(held)} held out for the detect stage's quality figures "
                              f"(detect.holdout {p.holdout})" if held else ""))

    weights, metrics, reused = train_cached(model_src, base_hash, train, val, p, p.epochs, seed,
                                            raw_dir, records, work, "round0")
    report = {"labels": {"images": len(labels), "boxes": sum(map(len, labels.values())),
                         "train": len(train), "val": len(val), "origin": origin,
                         "rejected": len(rejects), "negatives": sum(1 for b in labels.values() if not b),
                         "train_negatives": n_bg, "review_no_spider": len(reviewed_negatives),
                         "holdout": len(held)},
              "round_0": {**metrics, "new_labels": 0, "retrained": not reused, "reused": reused}}
    candidates_all = []
    decided = review_decisions.DetectionDecisions(state)
    for r in range(1, p.selftrain.rounds + 1):
        # every labelled image is left alone, the held-out ones included (else they would leak
        # into training through review)
        cands = selftrain.candidates(weights, records, raw_dir, set(labels), p, r)
        candidates_all += cands
        new, counts = selftrain.select(cands, decided, p.selftrain)
        entry = {**counts}
        if new:
            for i, boxes in new.items():
                train[i] = boxes
                origins[i] = "unreviewed" if not p.selftrain.require_review else "review"
                rounds_of[i] = r
            weights, metrics, reused = train_cached(
                str(weights), file_sha256(weights), train, val, p, p.selftrain.epochs, seed,
                raw_dir, records, work, f"round{r}")
            entry.update({**metrics, "retrained": not reused, "reused": reused})
        else:  # nothing new to learn from: the model and its metrics carry over
            entry.update({**metrics, "retrained": False, "reused": False})
        report[f"round_{r}"] = entry
        print(selftrain.describe(r, entry, p.selftrain))
        if not new:  # the same model would propose the same candidates again
            break
    report.update(metrics)
    report["rounds"] = p.selftrain.rounds
    report["seconds"] = round(time.time() - t0, 1)
    # CPU time of this process: what the wall time would be on an unshared core
    report["cpu_seconds"] = round(time.process_time() - c0, 1)

    atomic.copy_file(weights, out_model)
    split_of = {**{i: "holdout" for i in held}, **{i: "train" for i in train},
                **{i: "val" for i in val}}
    boxes_of = {**{i: labels[i] for i in held}, **val, **train}
    manifest.write(out_dir / "labels.jsonl", (
        {"id": i, "split": split_of[i], "origin": origins[i], "round": rounds_of[i],
         "boxes": [[round(v, 2) for v in b] for b in boxes_of[i]]}
        for i in sorted(split_of)))
    manifest.write(out_dir / "rejects.jsonl", rejects)
    manifest.write(out_dir / "candidates.jsonl", candidates_all)
    if metrics_path:
        atomic.write_metrics(metrics_path, report)
    return report
