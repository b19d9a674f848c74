"""Planted copies: does `spidergan nearest` find a training photo in every form, and only then?

References: 200 synthetic spider photos (the synthetic source at default params, seed 7) and 50
photo-like images (bench/hashing.py's 1/f noise and shapes). Queries (750): 50 copies for each
transform below of references drawn at random, and 200 true non-copies: other synthetic photos
of the same generator (similar spiders on similar backgrounds) and other photo-like images.

Transforms: the forms training shows an image in (x-flip with train.mirror; 90/180/270-degree
turns and integer translation by up to 1/8 with reflection when ADA's geometric ops are on) and
ordinary edits (JPEG re-encode, rescale, brightness/contrast, crops of 4% and 10%, a rotation by
2-4 degrees), and a flip combined with a 10% crop. Every copy is saved as JPEG (quality 70-90).

Figures, each in the same run: recall per transform and false matches (share of non-copies
called copies) for (a) the plain 256-bit pHash at threshold 64 (the old `nearest`), (b) the
hash over forms at 64, (c) the engine (hash shortlist over forms + verification) at its default
threshold, and the engine's recall at the threshold that allows 1% false matches. Also the
time of `spidergan nearest`'s work over the 750 x 250 files (decode, hash, search, verify).

Goal: every transform recall >= 0.9, all >= 0.95, false matches <= 1%; nearest < 5 s on 2 cores.
Options: --refs-synthetic N, --refs-photo N, --per-transform N, --seed S.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
from PIL import Image  # noqa: E402

from spidergan import copies  # noqa: E402
from spidergan.metrics import memorization  # noqa: E402

OUT = ROOT / "bench" / "out" / "copies"
TRANSFORMS = ("reencode", "rescale", "brightness", "crop4", "crop10", "rotate3", "flipped",
              "rot90", "rot180", "rot270", "translate", "flipped_crop10")


def _save(path: Path, rgb: np.ndarray, quality: int = 92) -> str:
    tmp = path.with_suffix(".tmp.jpg")
    Image.fromarray(rgb).save(tmp, "JPEG", quality=quality)
    os.replace(tmp, path)
    return str(path)


def _synthetic(seed: int, index: int) -> np.ndarray:
    path = OUT / "src" / f"syn-{seed}-{index:05d}.png"
    if path.exists():
        return np.asarray(Image.open(path).convert("RGB"))
    from spidergan.params import SyntheticParams
    from spidergan.sources import synthetic

    rgb = synthetic.render(SyntheticParams(), seed, index)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return rgb


def _photo(i: int) -> np.ndarray:
    sys.path.insert(0, str(ROOT / "bench"))
    import hashing as bench_hashing  # bench/hashing.py's photo-like generator

    bench_hashing.OUT.mkdir(parents=True, exist_ok=True)
    return np.asarray(Image.open(bench_hashing._photo(100_000 + i)).convert("RGB"))


def _crop(rng, a: np.ndarray, total: float) -> np.ndarray:
    """Remove `total` of the width and of the height, split at random between the sides."""
    h, w = a.shape[:2]
    fx, fy = rng.uniform(0, 1, 2)
    cw, ch = int(round(total * w)), int(round(total * h))
    x0, y0 = int(fx * cw), int(fy * ch)
    return a[y0:h - (ch - y0), x0:w - (cw - x0)]


def transform(name: str, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = a.shape[:2]
    if name == "reencode":
        return a
    if name == "rescale":
        s = rng.uniform(0.4, 0.8)
        return cv2.resize(a, (max(8, int(w * s)), max(8, int(h * s))), interpolation=cv2.INTER_AREA)
    if name == "brightness":
        return cv2.convertScaleAbs(a, alpha=rng.uniform(0.75, 1.25), beta=rng.uniform(-25, 25))
    if name == "crop4":
        return _crop(rng, a, 0.04)
    if name == "crop10":
        return _crop(rng, a, 0.10)
    if name == "rotate3":
        ang = rng.uniform(2, 4) * rng.choice([-1, 1])
        m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
        return cv2.warpAffine(a, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    if name == "flipped":
        return a[:, ::-1]
    if name in ("rot90", "rot180", "rot270"):
        return np.rot90(a, int(name[3:]) // 90)
    if name == "translate":  # ADA's xint: integer shift up to 1/8 of the side, reflected in
        tx, ty = (int(round(v)) for v in rng.uniform(-0.125, 0.125, 2) * (w, h))
        pad = np.pad(a, ((abs(ty),) * 2, (abs(tx),) * 2, (0, 0)), mode="reflect")
        return pad[abs(ty) - ty:abs(ty) - ty + h, abs(tx) - tx:abs(tx) - tx + w]
    if name == "flipped_crop10":
        return _crop(rng, a[:, ::-1], 0.10)
    raise ValueError(name)


def build(n_syn: int, n_photo: int, per: int, n_neg: int, seed: int):
    """Write references and queries as JPEGs; returns (ref paths, query paths, truth, labels)."""
    rng = np.random.default_rng(seed)
    ref_dir, q_dir = OUT / f"run{seed}" / "refs", OUT / f"run{seed}" / "queries"
    ref_dir.mkdir(parents=True, exist_ok=True)
    q_dir.mkdir(parents=True, exist_ok=True)
    src = [_synthetic(7, i) for i in range(n_syn)] + [_photo(i) for i in range(n_photo)]
    refs = [_save(ref_dir / f"r{k:04d}.jpg", a) for k, a in enumerate(src)]
    queries, truth, labels = [], [], []
    for t in TRANSFORMS:
        for k in rng.choice(len(src), per, replace=False).tolist():
            a = np.ascontiguousarray(transform(t, src[k], rng))
            queries.append(_save(q_dir / f"{t}-{len(queries):04d}.jpg", a, int(rng.integers(70, 91))))
            truth.append(k)
            labels.append(t)
    n_neg_photo = n_neg // 4
    negs = ([_synthetic(7, 10_000 + i) for i in range(n_neg - n_neg_photo)]
            + [_photo(5_000 + i) for i in range(n_neg_photo)])
    for a in negs:
        queries.append(_save(q_dir / f"none-{len(queries):04d}.jpg", a, int(rng.integers(70, 91))))
        truth.append(-1)
        labels.append("non-copy")
    return refs, queries, np.asarray(truth), np.asarray(labels)


def _table(name: str, found: np.ndarray, truth: np.ndarray, labels: np.ndarray) -> float:
    neg = truth < 0
    fm = float(found[neg].mean())
    per = {t: float(found[labels == t].mean()) for t in TRANSFORMS}
    allr = float(found[~neg].mean())
    print(f"{name}: all {allr:.3f}, false matches {fm:.4f}")
    print("    " + "  ".join(f"{t} {v:.2f}" for t, v in per.items()))
    return allr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refs-synthetic", type=int, default=200)
    ap.add_argument("--refs-photo", type=int, default=50)
    ap.add_argument("--per-transform", type=int, default=46)
    ap.add_argument("--non-copies", type=int, default=198)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    refs, queries, truth, labels = build(a.refs_synthetic, a.refs_photo, a.per_transform,
                                         a.non_copies, a.seed)
    print(f"{len(queries)} queries ({len(TRANSFORMS)} transforms x {a.per_transform} + "
          f"{int((truth < 0).sum())} non-copies), {len(refs)} references; drawn in "
          f"{time.perf_counter() - t0:.0f} s")
    forms = copies.forms_for(mirror=True, rotations=True)

    t = time.perf_counter()
    from spidergan import hashing

    got_q = hashing.hash_files(queries, "phash", 16, workers=a.workers)
    got_r = hashing.hash_files(refs, "phash", 16, workers=a.workers)
    hashing.knn(got_q.hashes, got_r.hashes, k=1, workers=a.workers)
    t_old = time.perf_counter() - t
    print(f"baseline, the old nearest (plain pHash, exact decoding, no verification): {t_old:.2f} s")
    t = time.perf_counter()
    res2 = memorization.nearest(queries, refs, forms=copies.forms_for(True, False), workers=a.workers,
                                fast=True)
    took = time.perf_counter() - t
    print(f"spidergan nearest (default: mirror forms, reduced-scale decoding): "
          f"{took:.2f} s for {len(queries)} x {len(refs)} files ({a.workers} threads), "
          f"{took / t_old:.2f}x the baseline")
    t = time.perf_counter()
    res = memorization.nearest(queries, refs, forms=forms, workers=a.workers, fast=True)
    took = time.perf_counter() - t
    print(f"spidergan nearest --forms dihedral: {took:.2f} s, {took / t_old:.2f}x the baseline")
    t = time.perf_counter()
    old = memorization.nearest(queries, refs, forms=("plain",), workers=a.workers)
    print(f"plain form, exact decoding (--forms plain --exact): {time.perf_counter() - t:.2f} s")

    right = res.index == truth
    neg = truth < 0
    _table("(a) plain pHash-256 <= 64", old.hash_distance <= 64, truth, labels)
    _table("(b) pHash over 8 forms <= 64", res.hash_distance_any <= 64, truth, labels)
    thr = copies.DEFAULT_THRESHOLD
    _table(f"(c) engine, 8 forms, copy distance <= {thr}",
           (res.distance <= thr) & (right | neg), truth, labels)
    _table(f"(c') engine, 2 forms (mirror only), copy distance <= {thr}",
           (res2.distance <= thr) & ((res2.index == truth) | neg), truth, labels)
    d_neg = np.sort(res.distance[neg])
    k = int(math.floor(0.01 * len(d_neg)))
    t1 = float(d_neg[k]) - 1e-6  # the largest threshold with <= 1% false matches
    _table(f"(d) engine at <= 1% false matches (threshold {t1:.3f})",
           (res.distance <= t1) & (right | neg), truth, labels)
    print(f"non-copies' copy distance: min {d_neg[0]:.3f}, 1% {d_neg[k]:.3f}, median "
          f"{np.median(d_neg):.3f}; copies' max {res.distance[~neg].max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
