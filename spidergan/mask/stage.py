"""The mask stage: cut the spider out of each crop so the GAN stops learning webs, leaves and bark.

Input: a crop manifest (the deduplicated one, `data/unique/manifest.jsonl`, whose `file`s are
relative to `data/crops/`). Output, `data/masked/`:

    images/<id>.png    the crop composited on `mask.background`
    alpha/<id>.png     its alpha mask (8-bit, 255 = spider)
    manifest.jsonl     the crop record carried forward, `file` pointing at the composite, plus
                       alpha, crop_file, mask_method, mask_model, mask_area, iou
    rejects.jsonl      crops dropped with a reason: unreadable, or a mask covering less than
                       `min_area` / more than `max_area` of the image (a blank or full mask
                       means the masker failed, and such a crop would teach the GAN nothing)

Three maskers (`mask.method`):

* `grabcut`: GrabCut (colour models + graph cut, our own cut for the terms OpenCV's lacks)
  seeded from the crop's known geometry: outside the detector box (mapped into the crop) is
  sure background; inside, colour models of that border and of the box's core label pixels
  spider or background; the cut adds a centre prior and a shadow model, and the result is
  refined per pixel (thin legs added back). Needs no weights (the default).
* `rembg`: any rembg model by name, or a local ONNX file through rembg's `u2net_custom` session.
  One session per run. Weights are never fetched at run time: a missing file fails at once
  with its name and the command that fetches it, and leaves no folder behind.
* `none`: pass-through (full alpha), the baseline the other two are measured against.

On the synthetic source, each crop's true mask (its ground-truth object cut with the crop's
square geometry) gives the mean mask IoU, written to the metrics file.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from spidergan import atomic, images, manifest, outcome, sheets
from spidergan.outdir import fresh_dir
from spidergan.crop import extract_square  # the one place that cuts squares
from spidergan.mask.base import Masker, MaskError, NoMasker
from spidergan.mask.grabcut import GrabCutMasker
from spidergan.mask.rembg import RembgMasker
from spidergan.params import MaskParams

log = logging.getLogger(__name__)

BACKGROUND_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}


def make_masker(p: MaskParams) -> Masker:
    if p.method == "none":
        return NoMasker()
    if p.method == "grabcut":
        return GrabCutMasker(p.grabcut)
    return RembgMasker(p)


# --------------------------------------------------------------------------- compositing
def composite(img: Image.Image, alpha: np.ndarray, background: str, *, fg: Image.Image | None = None,
              blur_radius: float = 12.0, noise_seed: int = 0) -> Image.Image:
    """`fg` (default: the crop) over `background` through `alpha`."""
    a = (alpha.astype(np.float32) / 255.0)[:, :, None]
    front = np.asarray(fg if fg is not None else img, np.float32)
    if background in BACKGROUND_COLOURS:
        back = np.broadcast_to(np.array(BACKGROUND_COLOURS[background], np.float32), front.shape)
    elif background == "blur":
        back = np.asarray(img.filter(ImageFilter.GaussianBlur(blur_radius)), np.float32)
    elif background == "noise":
        rng = np.random.default_rng(noise_seed)
        back = rng.integers(0, 256, front.shape, dtype=np.uint8).astype(np.float32)
    else:
        raise MaskError(f"unknown mask.background {background!r}")
    out = front * a + back * (1.0 - a)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def _noise_seed(seed: int, crop_id: str) -> int:
    """Per-crop noise that does not change when other crops come or go."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{crop_id}".encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- ground truth
class TruthMasks:
    """True masks of crops on the synthetic source: the crop's object cut like the crop."""

    def __init__(self, raw_root: str | Path):
        self.root = Path(raw_root)
        self.records = manifest.read_by_id(self.root / "truth.jsonl")
        self._cached: tuple[str, np.ndarray] | None = None

    def __bool__(self) -> bool:
        return bool(self.records)

    def mask(self, record: dict, size: tuple[int, int]) -> Optional[np.ndarray]:
        """Boolean HxW true mask for the crop, or None when it has no ground-truth object."""
        label = record.get("truth_label")
        truth = self.records.get(record.get("image_id"))
        if label is None or truth is None or record.get("box") is None:
            return None
        if self._cached is None or self._cached[0] != truth["id"]:
            with Image.open(self.root / truth["mask"]) as im:  # our own label map, not untrusted
                self._cached = (truth["id"], np.asarray(im.convert("L")).copy())
        obj = Image.fromarray((self._cached[1] == int(label)).astype(np.uint8) * 255, "L")
        cut = extract_square(obj, record["box"], int(record.get("size") or size[0]),
                             pad="constant", resample=Image.Resampling.NEAREST)
        if cut.size != size:
            cut = cut.resize(size, Image.Resampling.NEAREST)
        return np.asarray(cut.convert("L")) >= 128


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


# --------------------------------------------------------------------------- the stage
def run(p: MaskParams, *, seed: int, manifest_path: str | Path, images_root: str | Path,
        out: str | Path, raw_root: str | Path | None, metrics_path: str | Path | None,
        plots_dir: str | Path | None, masker: Masker | None = None) -> dict:
    """Mask every crop of `manifest_path` (files relative to `images_root`) into `out`.

    Every run starts from an empty `out` (DVC removes it before the stage anyway: it is not a
    persistent output). Returns the metrics (also written to `metrics_path`).
    """
    out, images_root, manifest_path = Path(out), Path(images_root), Path(manifest_path)
    if not manifest_path.exists():
        raise MaskError(f"input manifest not found: {manifest_path}")
    records = manifest.read(manifest_path)
    masker = masker or make_masker(p)  # fails here, before any output, on missing weights
    fresh_dir(out, ("manifest.jsonl", "rejects.jsonl", ".params.json"), ("images", "alpha"))
    truth = TruthMasks(raw_root) if raw_root else None
    check_area = p.method != "none"  # pass-through is full by definition
    t0, n_new = time.perf_counter(), 0
    with manifest.Appender(out / "manifest.jsonl") as man, \
            manifest.Appender(out / "rejects.jsonl") as rej:
        for rec in tqdm(records, desc=f"mask {masker.name}", unit="crop"):
            cid = rec["id"]
            n_new += 1
            try:
                img = images.load_rgb(images_root / rec["file"])
            except images.ImageRejected as e:
                rej.append({"id": cid, "reason": e.reason, "detail": e.detail,
                            "image_id": rec.get("image_id")})
                continue
            try:
                alpha, fg = masker(img, rec)
            except Exception as e:  # one bad crop must not end a long run
                if isinstance(e, MaskError):
                    raise
                log.warning("masking %s failed: %s", cid, e)
                rej.append({"id": cid, "reason": "mask_failed", "detail": f"{type(e).__name__}: {e}",
                            "image_id": rec.get("image_id")})
                continue
            binary = alpha >= round(p.threshold * 255)
            area = float(binary.mean())
            gt = truth.mask(rec, img.size) if truth else None
            score = round(iou(binary, gt), 4) if gt is not None else None
            extra = {"image_id": rec.get("image_id"), "mask_area": round(area, 4), "iou": score}
            if check_area and area < p.min_area:
                rej.append({"id": cid, "reason": "mask_too_small",
                            "detail": f"mask covers {area:.3f} < min_area {p.min_area}", **extra})
                continue
            if check_area and area > p.max_area:
                rej.append({"id": cid, "reason": "mask_too_large",
                            "detail": f"mask covers {area:.3f} > max_area {p.max_area}", **extra})
                continue
            comp = composite(img, alpha, p.background, fg=fg, blur_radius=p.blur_radius,
                             noise_seed=_noise_seed(seed, cid))
            rel, arel = f"images/{cid}.png", f"alpha/{cid}.png"
            atomic.save_image(out / arel, Image.fromarray(alpha, "L"))
            atomic.save_image(out / rel, comp)
            man.append({**rec, "file": rel, "alpha": arel, "crop_file": rec["file"],
                        "mask_method": masker.name, "mask_model": masker.model, **extra})
    seconds = time.perf_counter() - t0
    log.info("masked %d crops in %.1fs", n_new, seconds)
    metrics = _metrics(p, masker, records, out)
    if metrics_path:
        atomic.write_metrics(metrics_path, metrics)
    if plots_dir:
        _write_sheet(p, out, images_root, Path(plots_dir))
    reasons = metrics["rejected_by_reason"]
    if not metrics["kept"]:
        outcome.refuse_empty("mask", f"no masked crops of {len(records)}",
                             reasons if records else None,
                             "mask.min_area / mask.max_area" if records else "no crops to mask")
    outcome.summary("mask", f"{metrics['kept']} masked crops of {len(records)} ({masker.name})",
                    reasons)
    return metrics


def _metrics(p: MaskParams, masker: Masker, records: list[dict], out: Path) -> dict:
    kept = manifest.read(out / "manifest.jsonl")
    rejects = manifest.read(out / "rejects.jsonl")
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    m = {"method": masker.name, "input": len(records), "kept": len(kept), "rejected": len(rejects),
         "rejected_by_reason": dict(sorted(reasons.items())),
         "mask_area_mean": round(float(np.mean([r["mask_area"] for r in kept])), 4) if kept else 0.0}
    if masker.model:
        m["model"] = masker.model
    # IoU over every crop that got a mask, dropped ones included: dropping is not a free pass
    scored = [r["iou"] for r in kept + rejects if r.get("iou") is not None]
    if scored:
        kept_scores = [r["iou"] for r in kept if r.get("iou") is not None]
        m.update({"iou_mean": round(float(np.mean(scored)), 4),
                  "iou_median": round(float(np.median(scored)), 4),
                  "iou_p10": round(float(np.percentile(scored, 10)), 4),
                  "iou_n": len(scored),
                  "iou_mean_kept": round(float(np.mean(kept_scores)), 4) if kept_scores else 0.0})
    return m


def _write_sheet(p: MaskParams, out: Path, images_root: Path, plots_dir: Path) -> None:
    """Crop, mask and composite side by side, one crop per row."""
    rows, titles = [], []
    for r in manifest.read(out / "manifest.jsonl")[:p.sheet_count]:
        try:
            orig = images.load_rgb(images_root / r["crop_file"])
        except images.ImageRejected:
            continue
        with Image.open(out / r["alpha"]) as a, Image.open(out / r["file"]) as c:
            rows.append((orig, a.convert("RGB"), c.convert("RGB")))
            titles.append(f"{r['id']}  area {r['mask_area']}" + (f"  IoU {r['iou']}" if r.get("iou") is not None else ""))
    atomic.save_image(plots_dir / "contact_sheet.png",
                      sheets.contact_sheet(rows, titles=titles, cell=128))

