"""Synthetic spider pictures with known masks, for the mask tests (no other stage needed).

A dark spider (abdomen, cephalothorax and eight thick two-segment legs) on a smooth random
texture, with its true mask. `write_source` lays a few of them out as the scrape and crop
stages would: raw images, a ground-truth label map, crop images and a crop manifest.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from spidergan import atomic, manifest


def texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth, bright-ish coloured noise (bark, leaves, out-of-focus background)."""
    base = rng.uniform(120, 220, 3)
    small = rng.normal(0, 40, (max(2, h // 16), max(2, w // 16), 3))
    big = np.asarray(Image.fromarray(np.clip(small + 128, 0, 255).astype(np.uint8))
                     .resize((w, h), Image.Resampling.BICUBIC), np.float32) - 128
    fine = rng.normal(0, 8, (h, w, 3))
    return np.clip(base + big + fine, 0, 255).astype(np.uint8)


def draw_spider(img: Image.Image, mask: Image.Image, cx: float, cy: float, r: float,
                rng: np.random.Generator, label: int = 255) -> tuple[int, int, int, int]:
    """Draw a spider of body radius ~r centred at (cx, cy); the mask gets `label`.

    Returns its bounding box (x0, y0, x1, y1), legs included, x1/y1 exclusive.
    """
    d, m = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    colour = tuple(int(v) for v in rng.uniform(20, 70, 3))
    leg_w = max(2, int(r * 0.22))
    angle0 = rng.uniform(0, 2 * math.pi)
    for side in (-1, 1):
        for k in range(4):
            a = angle0 + side * (0.55 + k * 0.55)
            knee = (cx + math.cos(a) * r * 1.7, cy + math.sin(a) * r * 1.7 - r * 0.6)
            a2 = a + side * 0.25
            tip = (knee[0] + math.cos(a2) * r * 1.5, knee[1] + math.sin(a2) * r * 1.5 + r * 0.9)
            for drw, fill in ((d, colour), (m, label)):
                drw.line([(cx, cy), knee, tip], fill=fill, width=leg_w, joint="curve")
    ax, ay = cx + math.cos(angle0 + math.pi) * r * 0.9, cy + math.sin(angle0 + math.pi) * r * 0.9
    for drw, fill in ((d, colour), (m, label)):
        drw.ellipse([cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6], fill=fill)
        drw.ellipse([ax - r, ay - r, ax + r, ay + r], fill=fill)
    ys, xs = np.nonzero(np.asarray(mask) == label)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def spider_crop(seed: int, size: int = 128) -> tuple[Image.Image, np.ndarray]:
    """A crop-like picture: spider centred, legs inside a ~15% margin. (image, bool mask)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(texture(rng, size, size))
    mask = Image.new("L", (size, size), 0)
    draw_spider(img, mask, size / 2, size / 2, size * 0.11, rng)
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    return img, np.asarray(mask) > 0


def square_around(b, margin: float) -> list[int]:
    """The crop stage's geometry: a square around box b, grown by `margin` of its side."""
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    side = max(b[2] - b[0], b[3] - b[1]) * (1 + 2 * margin)
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    return [x0, y0, x0 + round(side), y0 + round(side)]


def write_source(root: Path, n: int = 4, size: int = 128, seed: int = 0,
                 margin: float = 0.15) -> tuple[Path, Path, Path]:
    """Raw images + truth and crops + a crop manifest under `root`.

    Returns (crop manifest, crops folder, raw folder). The first spider sits at the image edge so
    its crop square extends past the picture.
    """
    from spidergan.crop import extract_square

    raw, crops = root / "raw", root / "crops"
    recs, truth = [], []
    for i in range(n):
        rng = np.random.default_rng(seed * 1000 + i)
        w, h = 240, 200
        img = Image.fromarray(texture(rng, w, h))
        labels = Image.new("L", (w, h), 0)
        cx, cy = (30, 40) if i == 0 else (rng.uniform(80, 160), rng.uniform(70, 130))
        det = draw_spider(img, labels, cx, cy, rng.uniform(11, 16), rng, label=1)
        img = img.filter(ImageFilter.GaussianBlur(0.6))
        image_id = f"syn{i:03d}"
        atomic.save_image(raw / "images" / f"{image_id}.png", img)
        atomic.save_image(raw / "truth" / f"{image_id}.png", labels)
        truth.append({"id": image_id, "mask": f"truth/{image_id}.png", "dup_group": None,
                      "dup_of": None, "objects": [{"cls": "spider", "box": list(det), "label": 1}]})
        box = square_around(det, margin)
        crop = extract_square(img, box, size, pad="edge", resample=Image.Resampling.LANCZOS)
        cid = f"{image_id}-0"
        atomic.save_image(crops / "images" / f"{cid}.png", crop)
        recs.append({"id": cid, "file": f"images/{cid}.png", "image_id": image_id, "box": box,
                     "det_box": list(det), "conf": 0.9, "side": box[2] - box[0], "size": size,
                     "truth_label": 1, "truth_cls": "spider", "group": cid,
                     "provenance": {"source": "synthetic"}})
    manifest.write(raw / "truth.jsonl", truth)
    manifest.write(crops / "manifest.jsonl", recs)
    return crops / "manifest.jsonl", crops, raw
