"""The crop stage: square crops around the spiders of `data/raw/`, written to `data/crops/`.

Boxes come from the detector (`data/detections.jsonl`) or, on the synthetic source, from the
ground truth. Per image the policy picks the best box or every box above `min_conf` after NMS;
each box grows by `margin` into a square, and a square smaller than `min_side` source pixels is
dropped, because upscaling a small spider adds nothing. Crops are resized to `size` and written
as PNG.

Crops hold real pixels only (`fit_square`): a square that would leave the photo is shifted
inside it, and where the margin makes it larger than the photo's short side the margin gives
way. Only a spider larger than the photo's short side still needs pixels the photo lacks:
`pad` fills them with one constant colour (the mean of the photo's border) or repeats the edge
pixels, or `drop` leaves the crop out. Mirroring (reflect padding) is never used: a GAN learns
mirrored legs and backgrounds as if they were spiders. metrics: shifted, padded, dropped.

Layout of `data/crops/`:
    images/<crop id>.png   crop id `<image id>-<n>`, n the box's index in its source list
    manifest.jsonl         id, file, image_id, box (the square, source px), det_box, conf, side,
                           size, truth_label, truth_cls, truth_dup_group, provenance
    rejects.jsonl          id (crop or image id), image_id, reason, detail

Boxes are in the pixel frame of the EXIF-oriented image (as `images.load_rgb` returns it), the
frame the detector saw. Every run starts from an emptied folder: data/crops is not a persistent
DVC output (DVC removes it before the stage), and crops are cheap next to what they come from.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from spidergan import atomic, images, manifest, outcome
from spidergan.outdir import fresh_dir
from spidergan.review import decisions as review_decisions
from spidergan.params import CropParams
from spidergan.boxes import iou

log = logging.getLogger(__name__)

PADS = ("constant", "edge")
RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX,
            "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC}


# --------------------------------------------------------------------------- geometry
def extract_square(img: Image.Image, box, size: int, pad: str = "constant",
                   resample=Image.Resampling.LANCZOS, fill=0) -> Image.Image:
    """Cut the square `box` = (x0, y0, x1, y1) (source pixels, x1/y1 exclusive) out of `img`
    and resize it to `size` x `size`.

    Where the square extends past the image, `pad="constant"` fills with `fill` (a number, or a
    tuple per band) and `pad="edge"` repeats the outermost pixels; nothing is ever mirrored.
    Works for any mode numpy round-trips ("RGB", "L", "RGBA", ...); cut label maps with mode "L"
    and `resample=Image.NEAREST` so that no new label values appear. `resample` may also be a
    name from RESAMPLE.
    """
    if isinstance(resample, str):
        resample = RESAMPLE[resample]
    x0, y0, x1, y1 = (int(math.floor(v + 0.5)) for v in box)
    side = x1 - x0
    if side <= 0 or y1 - y0 != side:
        raise ValueError(f"not a square box: {box}")
    if pad not in PADS:
        raise ValueError(f"pad must be one of {', '.join(PADS)}, got {pad!r}")
    w, h = img.size
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    bands = len(img.getbands())
    if ix0 >= ix1 or iy0 >= iy1:
        if pad == "edge":
            raise ValueError(f"box {box} does not overlap the {w}x{h} image")
        color = (fill,) * bands if bands > 1 and not isinstance(fill, tuple) else fill
        part = Image.new(img.mode, (side, side), color)
    else:
        part = img.crop((ix0, iy0, ix1, iy1))
        if (ix0, iy0, ix1, iy1) != (x0, y0, x1, y1):
            a = np.asarray(part)
            widths = [(iy0 - y0, y1 - iy1), (ix0 - x0, x1 - ix1)] + [(0, 0)] * (a.ndim - 2)
            if pad == "constant":
                if isinstance(fill, tuple):  # one value per band: pad band by band
                    a = np.stack([np.pad(a[..., k], widths[:2], mode="constant", constant_values=v)
                                  for k, v in enumerate(fill)], axis=-1).astype(a.dtype)
                else:
                    a = np.pad(a, widths, mode="constant", constant_values=fill)
            else:
                a = np.pad(a, widths, mode="edge")
            part = Image.fromarray(np.ascontiguousarray(a))  # L, RGB or RGBA from the shape
    if part.size != (size, size):
        part = part.resize((size, size), resample)
    return part


def border_colour(img: Image.Image) -> tuple:
    """Mean colour of the image's outermost rows and columns: the constant that pads a crop
    (the surroundings' average, not black bars a GAN would learn)."""
    a = np.asarray(img).astype(np.float64)
    if a.ndim == 2:
        a = a[..., None]
    edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return tuple(int(round(v)) for v in edge.mean(axis=0))


def fit_square(box, margin: float, width: int, height: int):
    """The crop square for `box` in a `width` x `height` photo: (square, how).

    The square of `square_around` is kept when it lies inside the photo ("inside"). Otherwise
    it is shifted inside ("shifted"), shrinking the margin first when the square is larger than
    the photo's short side but the box is not. Only a box larger than the short side leaves a
    square that must extend past the photo ("padded"); it then covers the photo's whole short
    side and is as small as the box allows.
    """
    sq = square_around(box, margin)
    side = sq[2] - sq[0]
    x0, y0, x1, y1 = (float(v) for v in box)
    need = max(1, int(math.ceil(max(x1 - x0, y1 - y0) - 1e-6)))   # the box itself must fit
    short = min(width, height)
    if sq[0] >= 0 and sq[1] >= 0 and sq[2] <= width and sq[3] <= height:
        return sq, "inside"
    if side > short:
        side = max(need, short)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2

    def place(c: float, limit: int) -> int:
        lo = int(math.floor(c - side / 2 + 0.5))
        if side <= limit:
            return min(max(lo, 0), limit - side)
        return min(max(lo, limit - side), 0)   # covers the whole photo along this axis

    sx, sy = place(cx, width), place(cy, height)
    how = "padded" if side > short else "shifted"
    return (sx, sy, sx + side, sy + side), how


def square_around(box, margin: float) -> tuple[int, int, int, int]:
    """The integer square centred on `box`, its side the longer box side times (1 + 2 margin)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(1, int(math.floor(max(x1 - x0, y1 - y0) * (1 + 2 * margin) + 0.5)))
    sx = int(math.floor((x0 + x1) / 2 - side / 2 + 0.5))
    sy = int(math.floor((y0 + y1) / 2 - side / 2 + 0.5))
    return sx, sy, sx + side, sy + side


def nms(boxes: list, confs: list, iou_max: float) -> list[int]:
    """Greedy non-maximum suppression; returns kept positions, strongest first (ties: lower index)."""
    order = sorted(range(len(boxes)), key=lambda i: (-confs[i], i))
    kept: list[int] = []
    for i in order:
        if all(iou(boxes[i], boxes[j]) <= iou_max for j in kept):
            kept.append(i)
    return kept


# --------------------------------------------------------------------------- planning
@dataclass
class Candidate:
    n: int                 # index in the source list (detections' boxes or truth objects)
    box: list              # detection / truth box, source px
    conf: float
    truth: dict | None = None
    review: str | None = None  # "accept" | "reject" when a person reviewed this detection


@dataclass
class Plan:
    """What to do with one image, decided before decoding it."""
    image: dict
    crops: list[dict] = field(default_factory=list)    # manifest records still lacking pixels
    rejects: list[dict] = field(default_factory=list)


def _candidates(image_id: str, p: CropParams, detections: dict | None, truth: dict | None,
                reviewed: review_decisions.DetectionDecisions | None = None):
    """(candidates, image-level reject reason or None). Detections carry their review."""
    if p.boxes == "truth":
        t = (truth or {}).get(image_id)
        if t is None:
            return [], ("no_truth", "no ground-truth record for this image")
        return [Candidate(n, list(o["box"]), 1.0, o) for n, o in enumerate(t.get("objects", []))
                if o.get("cls") == "spider"], None
    d = (detections or {}).get(image_id)
    if d is None:
        return [], ("no_detection", "no record in the detections file")
    if d.get("status", "ok") != "ok":
        return [], ("detection_error", str(d.get("reason", "")))
    if reviewed is None:  # no review log: every box unreviewed
        reviewed = review_decisions.DetectionDecisions({})
    boxes = reviewed.apply(image_id, d.get("boxes", []))
    return [Candidate(b["index"], list(b["box"]), float(b.get("conf", 1.0)), review=b["review"])
            for b in boxes if int(b.get("cls", 0)) == 0], None


def _match_truth(box, objects: list, min_iou: float) -> dict | None:
    best, best_iou = None, min_iou
    for o in objects:
        v = iou(box, o["box"])
        if v >= best_iou:
            best, best_iou = o, v
    return best


def plan_image(image: dict, p: CropParams, detections: dict | None, truth: dict | None,
               rejected_ids: set[str],
               reviewed: review_decisions.DetectionDecisions | None = None,
               no_spider: set[str] = frozenset()) -> Plan:
    """Pick boxes for one raw image and turn them into crop records and reject records.

    Reviewed detections: a rejected box is not cropped; an accepted one is cropped from the
    reviewed (possibly dragged) box whatever its confidence, and `best` prefers it.
    """
    plan = Plan(image)
    iid = image["id"]
    if iid in no_spider:
        plan.rejects.append({"id": iid, "image_id": iid, "reason": "review_no_spider",
                             "detail": "marked \"no spider\" in the review decisions file"})
        return plan
    cands, why = _candidates(iid, p, detections, truth, reviewed)
    if why:
        plan.rejects.append({"id": iid, "image_id": iid, "reason": why[0], "detail": why[1]})
        return plan
    if not cands:
        plan.rejects.append({"id": iid, "image_id": iid, "reason": "no_box", "detail": "no spider box"})
        return plan

    def reject(c: Candidate, reason: str, detail: str = ""):
        plan.rejects.append({"id": f"{iid}-{c.n}", "image_id": iid, "reason": reason, "detail": detail})

    strong = []
    for c in cands:
        if c.review == "reject":
            reject(c, "review_rejected", "detection box rejected in the review decisions file")
        elif c.conf < p.min_conf and c.review != "accept":
            reject(c, "low_conf", f"conf {c.conf:.3f} < {p.min_conf}")
        else:
            strong.append(c)
    if p.policy == "best":
        # highest confidence, then the larger box (truth boxes all have confidence 1)
        strong.sort(key=lambda c: (c.review != "accept", -c.conf,
                                   -(c.box[2] - c.box[0]) * (c.box[3] - c.box[1]), c.n))
        for c in strong[1:]:
            reject(c, "not_best", f"image's best box is {iid}-{strong[0].n}")
        chosen = strong[:1]
    else:
        keep = nms([c.box for c in strong], [c.conf for c in strong], p.nms_iou)
        for i, c in enumerate(strong):
            if i not in keep:
                reject(c, "nms_suppressed", f"overlaps a stronger box by IoU > {p.nms_iou}")
        chosen = [strong[i] for i in sorted(keep, key=lambda i: strong[i].n)]

    t = (truth or {}).get(iid) or {}
    for c in chosen:
        cid = f"{iid}-{c.n}"
        w, h = image.get("width"), image.get("height")
        if w and h:
            sq, how = fit_square(c.box, p.margin, int(w), int(h))
        else:  # a manifest without sizes (hand-made): the square as it falls
            sq, how = square_around(c.box, p.margin), "unknown"
        side = sq[2] - sq[0]
        if how == "padded" and p.pad == "drop":
            reject(c, "larger_than_photo", f"the spider ({side} px) is larger than the photo's "
                   f"short side ({min(int(w), int(h))} px) and crop.pad is drop")
            continue
        if side < p.min_side:
            reject(c, "too_small", f"square side {side} px < min_side {p.min_side}")
            continue
        if cid in rejected_ids:
            reject(c, "review_rejected", "rejected in the review decisions file")
            continue
        obj = c.truth if c.truth is not None else _match_truth(c.box, t.get("objects", []), p.truth_iou)
        plan.crops.append({
            "id": cid, "file": f"images/{cid}.png", "image_id": iid, "box": list(sq),
            "det_box": [float(v) for v in c.box], "conf": round(c.conf, 6), "side": side,
            "review": c.review, "fit": how,
            "size": p.size,
            "truth_label": int(obj["label"]) if obj is not None and "label" in obj else None,
            "truth_cls": obj.get("cls") if obj is not None else None,
            "truth_dup_group": t.get("dup_group"),
            "provenance": {"source": image.get("source"), "raw_file": image.get("file"),
                           "sha256": image.get("sha256"), **(image.get("provenance") or {})},
        })
    return plan


# --------------------------------------------------------------------------- the stage
def run(p: CropParams, *, raw: str | Path, out: str | Path,
        detections_path: str | Path | None = None, decisions_path: str | Path | None = None,
        metrics_path: str | Path | None = None, workers: int | None = None) -> dict:
    """Crop every image of the raw manifest; returns (and writes) the counts.

    Every run starts from an emptied `out` (DVC removes data/crops before the stage anyway: it
    is not a persistent output), so crops always follow the current detections and reviews."""
    raw, out = Path(raw), Path(out)
    images_in = list(manifest.read_by_id(raw / "manifest.jsonl").values())
    truth_path = raw / "truth.jsonl"
    truth = manifest.read_by_id(truth_path) if truth_path.exists() else None
    detections = None
    if not images_in:
        outcome.refuse_empty("crop", f"the raw manifest {raw / 'manifest.jsonl'} is empty or "
                             "missing: no images to crop from (run the scrape stage)")
    if p.boxes == "detections":
        if detections_path is None or not Path(detections_path).exists():
            raise FileNotFoundError(f"crop.boxes=detections but {detections_path} does not exist; "
                                    "run the detect stage first, or set crop.boxes=truth")
        detections = manifest.read_by_id(detections_path)
    elif truth is None:
        raise FileNotFoundError(f"crop.boxes=truth but {truth_path} does not exist (only the "
                                "synthetic source has ground truth); set crop.boxes=detections")
    rejected_ids: set[str] = set()
    no_spider: set[str] = set()
    reviewed = None
    if decisions_path:  # the review log: latest decision per key wins, undo clears
        state = review_decisions.latest(decisions_path)
        verdicts = review_decisions.verdicts(state, "crop")
        rejected_ids = {cid for cid, v in verdicts.items() if v == "reject"}
        no_spider = review_decisions.no_spider_images(state)
        if p.boxes == "detections":
            reviewed = review_decisions.DetectionDecisions(state)

    fresh_dir(out, ("manifest.jsonl", "rejects.jsonl", "run.json"), ("images",))
    (out / "images").mkdir()
    plans = [plan_image(r, p, detections, truth, rejected_ids, reviewed, no_spider)
             for r in images_in]
    resample = RESAMPLE[p.resample]
    # with pad: drop no kept square leaves the photo, so the mode is never used
    pad = "constant" if p.pad == "drop" else p.pad

    def cut(plan: Plan):
        if not plan.crops:
            return plan, None
        try:
            img = images.load_rgb(raw / plan.image["file"])
        except images.ImageRejected as e:
            return plan, e
        fill = border_colour(img) if p.pad == "constant" else 0
        for c in plan.crops:
            atomic.save_image(out / c["file"], extract_square(img, c["box"], p.size, pad, resample,
                                                              fill=fill))
        return plan, None

    with manifest.Appender(out / "manifest.jsonl") as man, \
            manifest.Appender(out / "rejects.jsonl") as rej, \
            ThreadPoolExecutor(max(1, workers or 2)) as ex:
        bar = tqdm(ex.map(cut, plans), total=len(plans), desc="crop", unit="img")
        for plan, err in bar:
            recs = plan.rejects
            if err is not None:
                recs = recs + [{"id": plan.image["id"], "image_id": plan.image["id"],
                                "reason": "unreadable", "detail": f"{err.reason}: {err.detail}"}]
            for r in recs:
                rej.append(r)
            if err is None:
                for c in plan.crops:
                    man.append(c)
    counts = summarize(out, len(images_in))
    if metrics_path:
        atomic.write_metrics(metrics_path, counts)
    drops = {k[len("drop_"):]: v for k, v in counts.items() if k.startswith("drop_")}
    if not counts["crops"]:
        outcome.refuse_empty("crop", f"no crops from {len(images_in)} images", drops,
                             f"crop.min_side {p.min_side}, crop.min_conf {p.min_conf}")
    outcome.summary("crop", f"{counts['crops']} crops from {counts['images_with_crops']} of "
                    f"{len(images_in)} images ({counts['shifted']} shifted inside the photo, "
                    f"{counts['padded']} padded with {p.pad}, {counts['dropped']} dropped as larger "
                    f"than the photo)", drops)
    return counts


def summarize(out: Path, n_images: int) -> dict:
    """Counts from the written files."""
    crops = manifest.read_by_id(out / "manifest.jsonl")
    rejects = manifest.read_by_id(out / "rejects.jsonl")
    reasons = Counter(r["reason"] for r in rejects.values())
    counts = {"images_in": n_images, "crops": len(crops),
              "images_with_crops": len({c["image_id"] for c in crops.values()}),
              "sides_median": float(np.median([c["side"] for c in crops.values()])) if crops else 0.0}
    for reason in ("no_box", "no_truth", "no_detection", "detection_error", "low_conf", "not_best",
                   "nms_suppressed", "too_small", "larger_than_photo", "review_rejected",
                   "review_no_spider", "unreadable"):
        counts[f"drop_{reason}"] = reasons.get(reason, 0)
    fits = Counter(c.get("fit") for c in crops.values())
    counts["shifted"] = fits.get("shifted", 0)     # moved inside the photo: real pixels only
    counts["padded"] = fits.get("padded", 0)       # spider larger than the photo's short side
    counts["dropped"] = reasons.get("larger_than_photo", 0)   # the same, with crop.pad: drop
    return counts
