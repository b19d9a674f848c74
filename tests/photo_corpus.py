"""A small folder of real-like photos and a YOLO label folder from "another project", drawn by
the tests (what a new user brings): spiders filling most of the frame, some larger than it,
photos under the minimum size, spider-free photos, label files named by photo stem with class
ids 0/1/2, empty files, a broken file and a file for a photo that is not there.

    photos/  garden/IMG_0001.jpg ...  porch/IMG_0001.jpg (same stem, other folder) ...
    labels/  garden/IMG_0001.txt ... (same layout), classes.txt
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spidergan.sources import synthetic

SIDE = 224


def _background(rng, w: int, h: int) -> np.ndarray:
    name = str(rng.choice(["bark", "litter", "leaf", "stone", "wall"]))
    light = np.array([0.3, 0.3, 0.9], np.float32)
    lin = synthetic.BACKGROUNDS[name](rng, h, w, light)   # linear light, float
    return (np.sqrt(np.clip(lin, 0, 1)) * 255 + 0.5).astype(np.uint8)


def make(root: Path, n_spiders: int = 12, n_empty: int = 4, n_small: int = 3, n_huge: int = 2,
         seed: int = 0, side: int = SIDE) -> dict:
    """Write photos/ and labels/ under root; returns what a test needs to know.

    Keys: photos, labels (folders), boxes {relative photo path: [boxes px]}, empty [paths],
    small [paths] (under min_side), classes {path: class id per box}, bad (broken label file),
    orphan (label without a photo).
    """
    rng = np.random.default_rng(seed)
    photos, labels = root / "photos", root / "labels"
    out = {"photos": photos, "labels": labels, "boxes": {}, "empty": [], "small": [],
           "classes": {}, "huge": []}
    plan = ([("spider", k) for k in range(n_spiders)] + [("huge", k) for k in range(n_huge)]
            + [("empty", k) for k in range(n_empty)] + [("small", k) for k in range(n_small)])
    for n, (kind, k) in enumerate(plan):
        folder = "porch" if n % 2 else "garden"
        rel = f"{folder}/IMG_{n // 2 + 1:04d}.jpg"   # stems repeat across the two folders
        w = h = side if kind != "small" else 120
        if kind != "small" and n % 4 == 1:
            w = int(side * 1.25)                      # some landscape photos
        rgb = _background(rng, w, h)
        boxes = []
        if kind in ("spider", "huge", "small"):
            span = min(w, h) * (rng.uniform(0.7, 0.9) if kind != "huge" else 1.6)
            centre = (w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h)
            box = synthetic.draw_spider(rgb, rng, span, centre)
            if box is not None:
                boxes.append([max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]),
                              min(float(h), box[3])])
        path = photos / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path, quality=90)
        if kind == "small":
            out["small"].append(rel)
        elif kind == "empty":
            out["empty"].append(rel)
        else:
            out["boxes"][rel] = boxes
            if kind == "huge":
                out["huge"].append(rel)
        # labels from another project: class ids 0, 1 and 2 all mean some spider
        cls = [int(rng.integers(0, 3)) for _ in boxes]
        out["classes"][rel] = cls
        lab = labels / Path(rel).with_suffix(".txt")
        lab.parent.mkdir(parents=True, exist_ok=True)
        lab.write_text("".join(
            f"{c} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} "
            f"{(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}\n" for c, b in zip(cls, boxes)))
    (labels / "classes.txt").write_text("orb weaver\njumping spider\nwolf spider\n")
    bad = labels / "garden" / "IMG_0001.txt"
    bad.write_text(bad.read_text() + "1 0.5 0.5 0.2\n")   # a line with a field missing
    out["bad"] = "garden/IMG_0001.jpg"
    (labels / "garden" / "IMG_9999.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    out["orphan"] = "garden/IMG_9999.txt"
    return out
