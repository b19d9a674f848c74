"""What there is to review, read from the stage outputs (never by listing folders).

* detections: `data/detections.jsonl` joined with `data/raw/manifest.jsonl` (one item per image
  with at least one box; decisions are per box)
* crops: `data/crops/manifest.jsonl` (one item per crop)
* pairs: `data/eval/pairs.jsonl` (`{"fake", "real", "distance"}`, paths relative to the project
  root; one item per generated image, nearest first)

Files are re-read only when they change (inode, size, mtime). Listing is filtered and paginated
here, so the page never holds more than one page of 44,000 items.

Image files are found by id through these manifests, and every path is resolved and refused
unless it lies inside the project's data folders (`data/`, `models/`) and names an image.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Any, Callable

from spidergan import manifest
from spidergan.images import is_image_name
from spidergan.review import decisions as dec

STATUSES = {"detection": ("all", "undecided", "accept", "reject"),
            "crop": ("all", "undecided", "accept", "reject"),
            "pair": ("all", "undecided", "copy", "ok")}


class _Cached:
    """A file parsed by `loader`, re-parsed only when the file changes; None when missing."""

    def __init__(self, path: Path, loader: Callable[[Path], Any]):
        self.path, self.loader = path, loader
        self._sig: tuple | None = ()
        self._value: Any = None

    def get(self) -> Any:
        try:
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            sig = None
        if sig != self._sig:
            self._value = None if sig is None else self.loader(self.path)
            self._sig = sig
        return self._value


def inside(path: str | Path, roots: list[Path]) -> Path | None:
    """`path` resolved (symlinks followed) if it is an existing image file inside one of
    `roots`, else None. Relative paths are taken relative to the first root's parent (the
    project root); `..`, absolute paths elsewhere and links leading out are all refused."""
    try:
        p = Path(path)
        if not p.is_absolute():
            p = roots[0].parent / p
        p = p.resolve(strict=True)
    except (OSError, ValueError, RuntimeError):
        return None
    if not p.is_file() or not is_image_name(p):
        return None
    for r in roots:
        if p.is_relative_to(r.resolve()):
            return p
    return None


def _window(matching: list[tuple[int, dict]], start: int, per_page: int) -> dict:
    """The matching items from base position `start` on, at most `per_page` of them.

    Windows are anchored on positions in the unfiltered order, not on page numbers, so deciding
    items under a status filter (which drops them from the matching set) never skips others.
    """
    pos = [p for p, _ in matching]
    i0 = bisect.bisect_left(pos, start)
    i1 = min(len(pos), i0 + per_page)
    return {"items": [it for _, it in matching[i0:i1]], "offset": i0, "matching": len(pos),
            "start": start, "next_start": pos[i1] if i1 < len(pos) else None,
            "prev_start": pos[max(0, i0 - per_page)] if i0 > 0 else None}


def _in_range(v: float | None, lo: float | None, hi: float | None) -> bool:
    if lo is None and hi is None:
        return True
    if v is None:
        return False
    return (lo is None or v >= lo) and (hi is None or v <= hi)


class ReviewData:
    def __init__(self, root: str | Path, data: str | Path = "data"):
        self.root = Path(root).resolve()
        self.data = (self.root / data).resolve()
        self.roots = [self.data, (self.root / "models").resolve()]
        self.decisions_path = self.data / "review" / "decisions.jsonl"
        self._raw = _Cached(self.data / "raw" / "manifest.jsonl", manifest.read_by_id)
        self._det = _Cached(self.data / "detections.jsonl", manifest.read_by_id)
        self._crops = _Cached(self.data / "crops" / "manifest.jsonl", manifest.read_by_id)
        self._pairs = _Cached(self.data / "eval" / "pairs.jsonl", self._load_pairs)
        self._det_items: tuple[Any, Any, list, dict] | None = None

    # ------------------------------------------------------------------ sources
    @staticmethod
    def _load_pairs(path: Path) -> list[dict]:
        """Latest record per fake, nearest (most suspicious) first; `n` is the list position."""
        pairs = {}
        for r in manifest.iter_records(path):
            if isinstance(r, dict) and isinstance(r.get("fake"), str) and isinstance(r.get("real"), str):
                pairs[r["fake"]] = r
        ordered = sorted(pairs.values(), key=lambda r: (r.get("distance") is None, r.get("distance") or 0))
        return [dict(r, n=i) for i, r in enumerate(ordered)]

    def detection_images(self) -> tuple[list[dict], dict[str, dict]] | None:
        """Images with boxes, in detections order, and the same by id; None before detect ran."""
        det, raw = self._det.get(), self._raw.get()
        if det is None:
            return None
        if self._det_items is None or self._det_items[0] is not det or self._det_items[1] is not raw:
            raw = raw or {}
            items = []
            for image_id, r in det.items():
                src = raw.get(image_id)
                boxes = r.get("boxes") or []
                if r.get("status", "ok") != "ok" or not boxes or src is None:
                    continue
                items.append({"id": image_id, "w": src.get("width"), "h": src.get("height"),
                              "boxes": [{"box": [float(v) for v in b["box"]], "conf": b.get("conf")}
                                        for b in boxes]})
            self._det_items = (det, raw, items, {it["id"]: it for it in items})
        return self._det_items[2], self._det_items[3]

    def crops(self) -> dict[str, dict] | None:
        return self._crops.get()

    def pairs(self) -> list[dict] | None:
        return self._pairs.get()

    # ------------------------------------------------------------------ files by id
    def raw_file(self, image_id: str) -> Path | None:
        rec = (self._raw.get() or {}).get(image_id)
        if rec is None or not isinstance(rec.get("file"), str):
            return None
        return inside(self.data / "raw" / rec["file"], self.roots)

    def crop_file(self, crop_id: str) -> Path | None:
        rec = (self.crops() or {}).get(crop_id)
        if rec is None or not isinstance(rec.get("file"), str):
            return None
        return inside(self.data / "crops" / rec["file"], self.roots)

    def pair_file(self, n: int, side: str) -> Path | None:
        if side not in ("fake", "real"):
            return None
        pairs = self.pairs() or []
        if not 0 <= n < len(pairs):
            return None
        return inside(self.root / pairs[n][side], self.roots)

    # ------------------------------------------------------------------ decisions per item
    def detection_state(self, image_id: str, i: int, box: dict, decided: dict) -> dict | None:
        rec = decided.get(("detection", dec.detection_key(image_id, i)))
        if rec is not None and dec.iou(rec["orig_box"], box["box"]) < dec.MATCH_IOU:
            return None  # about an earlier detection at this index: stale
        return rec

    # ------------------------------------------------------------------ listings
    def list_detections(self, decided: dict, status: str = "all", min_conf: float | None = None,
                        max_conf: float | None = None, start: int = 0, per_page: int = 200) -> dict:
        got = self.detection_images()
        if got is None:
            return {"message": "no detections yet: run the detect stage", "counts": _counts("detection", []), **_window([], 0, 1)}
        images, _ = got
        matching, states = [], []
        for pos, it in enumerate(images):
            boxes, any_match = [], False
            for i, b in enumerate(it["boxes"]):
                rec = self.detection_state(it["id"], i, b, decided)
                d = rec["decision"] if rec else None
                states.append(d)
                m = (status == "all" or (status == "undecided" and d is None) or d == status) \
                    and _in_range(b["conf"], min_conf, max_conf)
                any_match |= m
                boxes.append({"i": i, "key": dec.detection_key(it["id"], i), "orig_box": b["box"],
                              "box": rec["box"] if rec else b["box"], "conf": b["conf"],
                              "decision": d, "match": m})
            if any_match:
                matching.append((pos, {"id": it["id"], "w": it["w"], "h": it["h"], "boxes": boxes}))
        return {"message": None if images else "detect found no boxes to review",
                "images": len(images), "counts": _counts("detection", states),
                **_window(matching, start, per_page)}

    def list_crops(self, decided: dict, status: str = "all", min_conf: float | None = None,
                   max_conf: float | None = None, start: int = 0, per_page: int = 200) -> dict:
        crops = self.crops()
        if crops is None:
            return {"message": "no crops yet: run the crop stage", "counts": _counts("crop", []), **_window([], 0, 1)}
        matching, states = [], []
        for pos, (cid, r) in enumerate(crops.items()):
            rec = decided.get(("crop", cid))
            d = rec["decision"] if rec else None
            states.append(d)
            if (status == "all" or (status == "undecided" and d is None) or d == status) \
                    and _in_range(r.get("conf"), min_conf, max_conf):
                matching.append((pos, {"key": cid, "id": cid, "image_id": r.get("image_id"),
                                 "conf": r.get("conf"), "decision": d}))
        return {"message": None if crops else "the crop stage kept no crops",
                "counts": _counts("crop", states), **_window(matching, start, per_page)}

    def list_pairs(self, decided: dict, status: str = "all", start: int = 0, per_page: int = 200,
                   **_ignored) -> dict:
        pairs = self.pairs()
        if pairs is None:
            return {"message": "no pairs yet: run the evaluate stage", "counts": _counts("pair", []), **_window([], 0, 1)}
        matching, states = [], []
        for r in pairs:
            fake = r["fake"]
            rec = decided.get(("pair", fake))
            d = rec["decision"] if rec else None
            states.append(d)
            if status == "all" or (status == "undecided" and d is None) or d == status:
                matching.append((r["n"], {"key": fake, "n": r["n"], "fake": fake, "real": r["real"],
                                           "distance": r.get("distance"), "decision": d}))
        return {"message": None if pairs else "evaluate wrote no pairs",
                "counts": _counts("pair", states), **_window(matching, start, per_page)}


def _counts(kind: str, states: list) -> dict:
    out = {"total": len(states), "undecided": sum(1 for s in states if s is None)}
    for d in dec.DECISIONS[kind]:
        out[d] = sum(1 for s in states if s == d)
    return out
