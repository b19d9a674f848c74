"""A tiny `data/raw/` drawn by the tests themselves (the layout of the scrape stage's contract).

Spiders are dark bodies with legs on smooth colour noise; some images carry two spiders, some a
spider too small to crop, some a leaf; a few are planted near-duplicates (re-encoded, slightly
brightened or rescaled copies) sharing a `dup_group`.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _background(rng, w, h):
    coarse = rng.random((h // 40 + 2, w // 40 + 2, 3)) * 160 + 60
    return Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BICUBIC)


def _spider(draw, mask, rng, cx, cy, r, label):
    box = [cx - 2 * r, cy - 2 * r, cx + 2 * r, cy + 2 * r]
    color = tuple(int(v) for v in rng.integers(0, 60, 3))
    for k in range(8):
        a = k * np.pi / 4 + rng.uniform(-0.2, 0.2)
        ex, ey = cx + 1.9 * r * np.cos(a), cy + 1.9 * r * np.sin(a)
        for d in (draw, mask):
            d.line([cx, cy, ex, ey], fill=color if d is draw else label, width=max(1, r // 5))
    for d in (draw, mask):
        d.ellipse([cx - r * 0.6, cy - r * 0.8, cx + r * 0.6, cy + r * 0.8],
                  fill=color if d is draw else label)
    return [max(0, int(v)) for v in box]


def make_raw(root: Path, n: int = 24, seed: int = 0, dup_every: int = 4) -> Path:
    """Write `n` base images (+ near-duplicates of every `dup_every`-th) under root."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "truth").mkdir(exist_ok=True)
    man, truth = [], []

    def write(iid, img, mask, objects, group, dup_of, quality):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        (root / "images" / f"{iid}.jpg").write_bytes(buf.getvalue())
        mask.save(root / "truth" / f"{iid}.png")
        man.append({"id": iid, "file": f"images/{iid}.jpg", "source": "synthetic", "width": img.width,
                    "height": img.height, "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                    "provenance": {"generator": "tests", "seed": seed}})
        truth.append({"id": iid, "mask": f"truth/{iid}.png", "objects": objects,
                      "dup_group": group, "dup_of": dup_of})

    for i in range(n):
        w, h = int(rng.integers(320, 480)), int(rng.integers(320, 480))
        img = _background(rng, w, h)
        mask = Image.new("L", (w, h), 0)
        draw, mdraw = ImageDraw.Draw(img), ImageDraw.Draw(mask)
        objects = []
        kind = i % 6
        r = 6 if kind == 5 else int(rng.integers(25, 50))  # kind 5: too small to crop
        cx, cy = int(rng.integers(r * 2, w - r * 2)), int(rng.integers(r * 2, h - r * 2))
        objects.append({"cls": "spider", "box": _spider(draw, mdraw, rng, cx, cy, r, 1), "label": 1})
        if kind == 1:  # a second, smaller spider in a corner
            objects.append({"cls": "spider", "box": _spider(draw, mdraw, rng, 60, 60, 20, 2), "label": 2})
        if kind == 2:  # a leaf distractor
            lb = [w - 90, h - 60, w - 20, h - 20]
            draw.ellipse(lb, fill=(40, 140, 40))
            mdraw.ellipse(lb, fill=3)
            objects.append({"cls": "leaf", "box": lb, "label": 3})
        iid = f"syn{i:05d}"
        group = iid if i % dup_every == 0 else None
        write(iid, img, mask, objects, group, None, 92)
        if group:
            # the near-duplicate: brighter, re-encoded at a lower quality
            a = np.clip(np.asarray(img, np.int16) + 12, 0, 255).astype(np.uint8)
            write(f"{iid}d", Image.fromarray(a), mask, objects, group, iid, 75)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in man))
    (root / "truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in truth))
    return root
