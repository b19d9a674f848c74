"""A small project folder for the review tests: drawn spider photos and the stage outputs that
the review app reads (raw manifest, detections, crops manifest, evaluate's pairs), following the
data contract between stages."""

from __future__ import annotations

import contextlib
import json
import math
import random
import threading
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from spidergan import manifest

# image id -> (size, spiders as (cx, cy, r)), detections add one false box on img-2
SCENES = {
    "img-0": ((480, 360), [(150, 170, 38), (350, 210, 30)]),
    "img-1": ((360, 480), [(180, 250, 52)]),
    "img-2": ((520, 340), [(260, 160, 44)]),
    "img-3": ((400, 400), [(200, 190, 60)]),
}


def draw_photo(size, spiders, seed) -> Image.Image:
    rng = random.Random(seed)
    w, h = size
    im = Image.new("RGB", size)
    d = ImageDraw.Draw(im)
    top, bottom = (rng.randint(60, 90), rng.randint(90, 120), rng.randint(40, 60)), (30, 45, 25)
    for y in range(h):  # soft foliage gradient
        t = y / (h - 1)
        d.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(14):  # out-of-focus leaves
        x, y, r = rng.randint(0, w), rng.randint(0, h), rng.randint(20, 60)
        d.ellipse([x - r, y - r // 2, x + r, y + r // 2], fill=(rng.randint(50, 90), rng.randint(100, 140), 50))
    im = im.filter(ImageFilter.GaussianBlur(6))
    d = ImageDraw.Draw(im)
    for cx, cy, r in spiders:
        for k in range(8):  # legs: two segments each
            a = math.pi * (k / 7.0) * 0.9 + (0.15 if k < 4 else 0.35) + (math.pi if k % 2 else 0)
            kx, ky = cx + math.cos(a) * r * 0.8, cy + math.sin(a) * r * 0.55 - r * 0.25
            fx, fy = cx + math.cos(a) * r * 1.0, cy + math.sin(a) * r * 0.9 + r * 0.15
            d.line([(cx, cy), (kx, ky), (fx, fy)], fill=(35, 22, 12), width=max(2, r // 14))
        d.ellipse([cx - r * 0.32, cy - r * 0.2, cx + r * 0.32, cy + r * 0.55], fill=(70, 42, 20))
        d.ellipse([cx - r * 0.2, cy - r * 0.42, cx + r * 0.2, cy - r * 0.08], fill=(50, 30, 15))
    return im


def spider_box(cx, cy, r, size):
    w, h = size
    return [max(0, cx - r - 4), max(0, cy - r * 0.85), min(w, cx + r + 4), min(h, cy + r * 1.1)]


def make_project(root: Path, n_pairs: int = 3, pairs: bool = True) -> Path:
    """Write data/raw, data/detections.jsonl, data/crops and (optionally) data/eval under root."""
    data = root / "data"
    raw, crops = [], []
    dets = []
    for n, (image_id, (size, spiders)) in enumerate(SCENES.items()):
        im = draw_photo(size, spiders, seed=n)
        f = f"images/{image_id}.jpg"
        (data / "raw" / "images").mkdir(parents=True, exist_ok=True)
        im.save(data / "raw" / f, quality=90)
        raw.append({"id": image_id, "file": f, "source": "synthetic", "width": size[0], "height": size[1],
                    "sha256": "0" * 64, "provenance": {"source": "synthetic"}})
        boxes = [{"box": spider_box(cx, cy, r, size), "conf": round(0.93 - 0.11 * i - 0.04 * n, 2), "cls": 0}
                 for i, (cx, cy, r) in enumerate(spiders)]
        if image_id == "img-2":  # a false positive on a leaf
            boxes.append({"box": [390.0, 220.0, 470.0, 300.0], "conf": 0.31, "cls": 0})
        dets.append({"id": image_id, "status": "ok", "boxes": boxes})
        for i, b in enumerate(boxes):
            x0, y0, x1, y1 = b["box"]
            side = max(x1 - x0, y1 - y0) * 1.2
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            region = [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]
            crop = im.crop(tuple(int(v) for v in region)).resize((128, 128))
            cid = f"{image_id}-{i}"
            (data / "crops" / "images").mkdir(parents=True, exist_ok=True)
            crop.save(data / "crops" / "images" / f"{cid}.png")
            crops.append({"id": cid, "file": f"images/{cid}.png", "image_id": image_id, "box": region,
                          "det_box": b["box"], "conf": b["conf"], "side": side, "size": 128,
                          "truth_label": None, "truth_cls": None, "provenance": {}})
    dets.append({"id": "img-missing", "status": "error", "reason": "not_an_image", "boxes": []})
    manifest.write(data / "raw" / "manifest.jsonl", raw)
    manifest.write(data / "detections.jsonl", dets)
    manifest.write(data / "crops" / "manifest.jsonl", crops)
    if pairs:
        recs = []
        (data / "eval" / "fakes").mkdir(parents=True, exist_ok=True)
        for k in range(n_pairs):
            real = crops[k]
            fake = Image.open(data / "crops" / real["file"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if k:  # the first one is a near-copy, the others drift away
                fake = fake.filter(ImageFilter.GaussianBlur(1 + k)).rotate(25 * k)
            fake.save(data / "eval" / "fakes" / f"fake-{k}.png")
            recs.append({"fake": f"data/eval/fakes/fake-{k}.png", "real": f"data/crops/{real['file']}",
                         "distance": round(0.05 + 0.2 * k, 3)})
        manifest.write(data / "eval" / "pairs.jsonl", recs)
    return root


def big_manifests(root: Path, n: int = 44_000) -> None:
    """Replace the manifests by n synthetic records pointing at the few real files (only the
    fields the review app reads, written as text: this is about listing speed, not the data)."""
    data = root / "data"
    raw = manifest.read(data / "raw" / "manifest.jsonl")
    det = {r["id"]: r for r in manifest.read(data / "detections.jsonl")}
    crops = manifest.read(data / "crops" / "manifest.jsonl")
    raw_lines, det_lines, crop_lines = [], [], []
    for i in range(n):
        src, c = raw[i % len(raw)], crops[i % len(crops)]
        rid = f"p{i:06d}"
        raw_lines.append(f'{{"id":"{rid}","file":"{src["file"]}","width":{src["width"]},"height":{src["height"]}}}\n')
        det_lines.append(f'{{"id":"{rid}","status":"ok","boxes":{json.dumps(det[src["id"]]["boxes"])}}}\n')
        crop_lines.append(f'{{"id":"{rid}-0","file":"{c["file"]}","image_id":"{rid}","conf":{c["conf"]}}}\n')
    for path, lines in ((data / "raw" / "manifest.jsonl", raw_lines), (data / "detections.jsonl", det_lines),
                        (data / "crops" / "manifest.jsonl", crop_lines)):
        path.write_text("".join(lines))


@contextlib.contextmanager
def running_server(app):
    """The app served by uvicorn in a thread on 127.0.0.1:<free port>; yields its URL."""
    import uvicorn

    from spidergan.review.app import bind, url_of

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("review server did not start")
        time.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()
        app.state.log.close()
