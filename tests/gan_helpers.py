"""Shared helpers for the GAN tests: a tiny image folder, packed dataset, tiny train params."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from spidergan import manifest
from spidergan.params import DatasetParams, TrainParams


def make_images(root: Path, n: int = 24, size: int = 48, seed: int = 0) -> Path:
    """Dark blobs with legs on white, like masked spider crops; returns the manifest path."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        im = Image.new("RGB", (size, size), "white")
        d = ImageDraw.Draw(im)
        cx, cy = rng.integers(size // 3, 2 * size // 3, 2)
        r = int(rng.integers(size // 12, size // 5))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
        for k in range(8):
            a = k * np.pi / 4 + rng.normal() * 0.2
            d.line([cx, cy, cx + 2 * r * np.cos(a), cy + 2 * r * np.sin(a)], fill=(0, 0, 0), width=1)
        im.save(root / f"images/s{i:03d}.png")
        recs.append({"id": f"s{i:03d}", "file": f"images/s{i:03d}.png", "provenance": {"i": i}})
    manifest.write(root / "manifest.jsonl", recs)
    return root / "manifest.jsonl"


def make_dataset(tmp: Path, resolution: int = 16, n: int = 24, holdout: int = 2) -> Path:
    from spidergan.gan import dataset

    man = make_images(tmp / "masked", n=n)
    out = tmp / "dataset"
    dataset.run(DatasetParams(size=1000, holdout=holdout), resolution, 0,
                {"masked": (man, tmp / "masked")}, out=out, metrics_path=None)
    return out


def tiny(**kw) -> TrainParams:
    base = dict(resolution=16, batch=4, kimg=0.032, snap_kimg=0.016, channel_base=128,
                channel_max=16, z_dim=8, w_dim=8, mapping_layers=2, grid=2, threads=1,
                r1_interval=4, pl_interval=2, ada_interval=2, ada_kimg=0.5, augment="ada",
                on_mismatch="error")
    base.update(kw)
    return TrainParams(**base)


def replace(p: TrainParams, **kw) -> TrainParams:
    return dataclasses.replace(p, **kw)
