"""A tiny drawn detection set for the detector tests: dark spiders (body + eight legs) on noise.

Independent of the synthetic source so the detector tests do not move when the generator does.
Writes a `data/raw`-shaped folder: images/, manifest.jsonl and truth.jsonl with known boxes.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from spidergan import manifest


def draw_spider(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng) -> list[float]:
    """Draw one spider; return its box [x0, y0, x1, y1] (legs included)."""
    xs, ys = [cx - r * 0.5, cx + r * 0.5], [cy - r * 0.7, cy + r * 0.7]
    width = max(1, int(r * 0.12))
    for side in (-1, 1):
        for k in range(4):
            a = math.radians(-60 + k * 40 + rng.uniform(-8, 8))
            kx, ky = cx + side * r * 0.9 * math.cos(a), cy + r * 0.9 * math.sin(a) - r * 0.3
            fx, fy = kx + side * r * 0.6 * math.cos(a + 0.8), ky + r * 0.8
            draw.line([(cx, cy), (kx, ky), (fx, fy)], fill=(20, 15, 10), width=width)
            xs += [kx, fx]
            ys += [ky, fy]
    draw.ellipse([cx - r * 0.35, cy - r * 0.1, cx + r * 0.35, cy + r * 0.7], fill=(30, 20, 15))
    draw.ellipse([cx - r * 0.22, cy - r * 0.45, cx + r * 0.22, cy], fill=(35, 25, 20))
    pad = width / 2
    return [min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad]


def make_image(rng, size=(160, 128), n=1):
    w, h = size
    base = rng.integers(120, 230, size=3)
    noise = rng.normal(0, 18, size=(h, w, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(im)
    boxes = []
    for _ in range(n):
        r = rng.uniform(0.16, 0.26) * min(w, h)
        cx, cy = rng.uniform(r * 1.6, w - r * 1.6), rng.uniform(r * 1.0, h - r * 1.4)
        b = draw_spider(draw, cx, cy, r, rng)
        boxes.append([max(0.0, b[0]), max(0.0, b[1]), min(float(w), b[2]), min(float(h), b[3])])
    return im, boxes


def make_raw(root: str | Path, count: int = 12, seed: int = 0, size=(160, 128)) -> Path:
    """Write `count` toy images into `root` laid out like data/raw; returns root."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    recs, truth = [], []
    for i in range(count):
        im, boxes = make_image(rng, size=size, n=1 + (i % 5 == 4))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=92)
        data = buf.getvalue()
        iid = f"toy{i:04d}"
        rel = f"images/{iid}.jpg"
        (root / rel).write_bytes(data)
        recs.append({"id": iid, "file": rel, "source": "synthetic", "width": im.width,
                     "height": im.height, "sha256": hashlib.sha256(data).hexdigest(),
                     "provenance": {"generator": "tests.detect_toy", "index": i}})
        truth.append({"id": iid, "mask": None, "dup_group": None, "dup_of": None,
                      "objects": [{"cls": "spider", "box": b, "label": k + 1}
                                  for k, b in enumerate(boxes)]})
    manifest.write(root / "manifest.jsonl", recs)
    manifest.write(root / "truth.jsonl", truth)
    return root
