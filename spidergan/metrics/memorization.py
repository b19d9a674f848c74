"""Is the generator copying its training set? Nearest real image for every generated one.

Two distances: the copy distance of `spidergan.copies` (hash shortlist over the forms training
shows an image in, verified by thumbnail correlation over crops and shifts) and cosine distance
between feature vectors the caller supplies (e.g. Inception or detector embeddings).
The memorization rate is the share of fakes whose nearest real lies within a threshold. A
side-by-side picture of the closest fake/real pairs (with the form that matched) lets a person
judge the worst cases.

`nearest_folders` is the same measure for any two folders (`spidergan nearest`).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from spidergan import atomic, copies, hashing, images, sheets

log = logging.getLogger(__name__)


def nearest_by_hash(fake_hashes: np.ndarray, real_hashes: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Index of and Hamming distance to the nearest real hash, per fake: two (n_fake,) arrays."""
    idx, dist = hashing.knn(fake_hashes, real_hashes, k=1, **kw)
    return idx[:, 0], dist[:, 0]


def nearest_by_features(fake: np.ndarray, real: np.ndarray, chunk_rows: int = 1024
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Index of and cosine distance (1 - cosine similarity) to the nearest real feature vector."""
    fake = np.asarray(fake, dtype=np.float32)
    real = np.asarray(real, dtype=np.float32)
    if len(fake) == 0 or len(real) == 0:
        return np.full(len(fake), -1, np.int64), np.full(len(fake), np.nan, np.float32)
    if fake.shape[1] != real.shape[1]:
        raise ValueError(f"feature sizes differ: {fake.shape[1]} and {real.shape[1]}")

    def unit(a):
        norm = np.linalg.norm(a, axis=1, keepdims=True)
        return a / np.maximum(norm, 1e-12)

    fu, ru = unit(fake), unit(real)
    idx = np.empty(len(fake), np.int64)
    dist = np.empty(len(fake), np.float32)
    for a in range(0, len(fake), chunk_rows):  # bounded memory: chunk_rows x n_real similarities
        sim = fu[a:a + chunk_rows] @ ru.T
        i = sim.argmax(axis=1)
        idx[a:a + chunk_rows] = i
        dist[a:a + chunk_rows] = 1.0 - sim[np.arange(len(i)), i]
    return idx, np.clip(dist, 0.0, 2.0)


def memorization_rate(distances: np.ndarray, threshold: float) -> float:
    """Share of fakes whose nearest real is within `threshold` (0 when there are no fakes)."""
    d = np.asarray(distances)
    return float(np.mean(d <= threshold)) if len(d) else 0.0


@dataclass
class Nearest:
    """Nearest reference per query: the copy engine's best verified match (spidergan.copies)."""
    query: list             # query items (paths or images) that decoded
    reference: list         # reference items that decoded
    index: np.ndarray       # per query: position in `reference` (-1: none)
    distance: np.ndarray    # per query: copy distance, 1 - correlation (0 = same picture)
    threshold: float        # copy distance counted as a copy
    skipped: list = field(default_factory=list)  # (item, reason, detail)
    form: list = field(default_factory=list)     # per query: form of the query that matched
    hash_distance: np.ndarray | None = None      # per query: Hamming distance of that form's hash
    hash_distance_any: np.ndarray | None = None  # per query: nearest hash over all forms

    @property
    def within(self) -> np.ndarray:
        return self.distance <= self.threshold

    @property
    def rate(self) -> float:
        return memorization_rate(self.distance, self.threshold)

    def summary(self) -> dict:
        within = self.within
        forms = {}
        for f, w in zip(self.form, within.tolist()):
            if w:
                forms[f] = forms.get(f, 0) + 1
        return {"queries": len(self.query), "references": len(self.reference),
                "within_threshold": int(within.sum()), "memorization_rate": round(self.rate, 6),
                "threshold": self.threshold,
                "median_distance": float(np.median(self.distance)) if len(self.distance) else None,
                "min_distance": float(self.distance.min()) if len(self.distance) else None,
                "skipped": len(self.skipped), "copies_by_form": forms}


def signatures(items: Sequence, kind: str = "phash", hash_size: int = 16,
               forms: Sequence[str] = ("plain", "flipped"), workers=None, fast: bool = False):
    """Engine signatures of paths or PIL images: (kept items, signatures, skipped)."""
    items = list(items)
    sig, kept, errors = copies.signatures(items, kind, hash_size, forms, workers, fast=fast)
    return [items[k] for k in kept.tolist()], sig, errors


def match(qs: "copies.Signatures", rs: "copies.Signatures", q_items: list, r_items: list,
          threshold: float = copies.DEFAULT_THRESHOLD, skipped: list | None = None,
          shortlist: int = copies.DEFAULT_SHORTLIST, workers=None) -> Nearest:
    """Nearest (verified) reference per query between two sets of signatures."""
    m = copies.nearest(qs, rs, shortlist, workers=workers)
    if len(rs) and len(qs):
        hd = np.min(np.stack([hashing.knn(qs.form_hashes[f], rs.hashes, k=1, workers=workers)[1][:, 0]
                              for f in range(len(qs.forms))]), axis=0)
    else:
        hd = np.full(len(qs), qs.hash_size ** 2 + 1, np.int32)
    return Nearest(q_items, r_items, m.index, m.distance, threshold, list(skipped or []),
                   m.form_names(), m.hash_distance, hd)


def nearest(queries: Sequence, references: Sequence, kind: str = "phash", hash_size: int = 16,
            threshold: float = copies.DEFAULT_THRESHOLD, workers: int | None = None,
            forms: Sequence[str] = ("plain", "flipped"),
            shortlist: int = copies.DEFAULT_SHORTLIST, fast: bool = False) -> Nearest:
    """Nearest reference for every query, in any of `forms`; items are paths or PIL images."""
    q, qs, qskip = signatures(queries, kind, hash_size, forms, workers, fast)
    r, rs, rskip = signatures(references, kind, hash_size, ("plain",), workers, fast)
    return match(qs, rs, q, r, threshold, qskip + rskip, shortlist, workers)


def pairs_picture(result: Nearest, n: int = 16, cell: int = 96) -> Image.Image:
    """The `n` closest query/reference pairs side by side, closest first."""
    if len(result.query) == 0 or len(result.reference) == 0:
        return sheets.message("no pairs: a folder had no readable images", cell * 4)
    order = np.argsort(result.distance, kind="stable")[:n]
    items = []
    for k in order.tolist():
        if result.index[k] < 0:
            continue
        d = float(result.distance[k])
        tag = " *" if d <= result.threshold else ""
        form = result.form[k] if k < len(result.form) else ""
        items.append((result.query[k], result.reference[int(result.index[k])],
                      f"d={d:.3f} {form}{tag}"))
    return sheets.pairs(items, cell=cell)


def save_pairs_picture(result: Nearest, path: str | Path, n: int = 16, cell: int = 96) -> None:
    atomic.save_image(path, pairs_picture(result, n, cell))


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted (for the folder-to-folder tool only)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and images.is_image_name(p))


def nearest_folders(query_dir: str | Path, reference_dir: str | Path, kind: str = "phash",
                    hash_size: int = 16, threshold: float = copies.DEFAULT_THRESHOLD,
                    workers: int | None = None, forms: Sequence[str] = ("plain", "flipped"),
                    fast: bool = False) -> Nearest:
    qs, rs = list_images(query_dir), list_images(reference_dir)
    if not qs:
        log.warning("no images in %s", query_dir)
    if not rs:
        log.warning("no images in %s", reference_dir)
    return nearest(qs, rs, kind, hash_size, threshold, workers, forms, fast=fast)


def to_csv(result: Nearest, query_root: str | Path | None = None,
           reference_root: str | Path | None = None) -> str:
    """One row per query: query file, nearest reference file, distance, within threshold."""
    def name(item, root):
        if isinstance(item, Image.Image):
            return ""
        p = Path(item)
        try:
            return str(p.relative_to(root)) if root else str(p)
        except ValueError:
            return str(p)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["query", "nearest", "distance", "form", "hash_distance", "within_threshold"])
    for k, item in enumerate(result.query):
        ref = result.reference[int(result.index[k])] if result.index[k] >= 0 else None
        w.writerow([name(item, query_root), name(ref, reference_root) if ref is not None else "",
                    round(float(result.distance[k]), 6) if ref is not None else "",
                    result.form[k] if ref is not None and k < len(result.form) else "",
                    int(result.hash_distance[k]) if ref is not None and result.hash_distance is not None else "",
                    bool(result.within[k])])
    return buf.getvalue()


def measure(fakes: Sequence, reals: Sequence, *, kind: str = "phash", hash_size: int = 16,
            threshold: float = copies.DEFAULT_THRESHOLD, fake_features: np.ndarray | None = None,
            real_features: np.ndarray | None = None, cosine_threshold: float = 0.05,
            pairs_path: str | Path | None = None, pairs_n: int = 16,
            forms: Sequence[str] = ("plain", "flipped")) -> dict:
    """Memorization figures of fakes against reals (PIL images or paths), outside the stage.

    Copy engine (keys `hash_*`, kept for compatibility): nearest real per fake in any of `forms`
    and the share within copy distance `threshold`. Features (when given, one row
    per fake/real in the same order): nearest real by cosine distance and the share within
    `cosine_threshold`. Optionally draws the closest pairs (by hash) to `pairs_path`.
    """
    res = nearest(fakes, reals, kind, hash_size, threshold, forms=forms)
    out = {f"hash_{k}": v for k, v in res.summary().items() if k != "copies_by_form"}
    if fake_features is not None and real_features is not None:
        _, cos = nearest_by_features(fake_features, real_features)
        out.update({"feature_memorization_rate": round(memorization_rate(cos, cosine_threshold), 6),
                    "feature_cosine_threshold": cosine_threshold,
                    "feature_min_distance": float(np.min(cos)) if len(cos) else None,
                    "feature_median_distance": float(np.median(cos)) if len(cos) else None})
    if pairs_path is not None:
        save_pairs_picture(res, pairs_path, n=pairs_n)
    return out
