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
from collections import Counter
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


def _window(positions: list[int], start: int, per_page: int) -> dict:
    """The matching positions from `start` on, at most `per_page` of them (as "positions").

    Windows are anchored on positions in the unfiltered order, not on page numbers, so deciding
    items under a status filter (which drops them from the matching set) never skips others.
    """
    i0 = bisect.bisect_left(positions, start)
    i1 = min(len(positions), i0 + per_page)
    return {"positions": positions[i0:i1], "offset": i0, "matching": len(positions), "start": start,
            "next_start": positions[i1] if i1 < len(positions) else None,
            "prev_start": positions[max(0, i0 - per_page)] if i0 > 0 else None}


def _wants(status: str) -> Callable[[str | None], bool]:
    if status == "all":
        return lambda d: True
    if status == "undecided":
        return lambda d: d is None
    return lambda d: d == status


def _empty(kind: str, message: str) -> dict:
    out = _window([], 0, 1)
    out.pop("positions")
    return {"message": message, "items": [], "counts": _counts(kind, Counter()), **out}


def display_name(rec: dict | None) -> str:
    """What people call a photo: its original file (folder source), its Flickr title and
    owner, else its id."""
    pv = (rec or {}).get("provenance") or {}
    if pv.get("path"):
        return str(pv["path"])
    if pv.get("photo_id"):
        owner = pv.get("owner_name") or pv.get("owner") or ""
        title = pv.get("title") or f"Flickr {pv['photo_id']}"
        return f"{title} ({owner})" if owner else str(title)
    return str((rec or {}).get("id", ""))


def _search_text(rec: dict | None, *extra: str) -> str:
    """Everything a search may match: id, name, Flickr title/owner/page, in lower case."""
    pv = (rec or {}).get("provenance") or {}
    parts = [str((rec or {}).get("id", "")), display_name(rec), *extra]
    parts += [str(pv.get(k, "")) for k in ("path", "title", "owner", "owner_name", "page_url",
                                           "photo_id")]
    return " ".join(parts).lower()


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
            items = []
            for image_id, r in det.items():
                src = (raw or {}).get(image_id)
                boxes = r.get("boxes") or []
                if r.get("status", "ok") != "ok" or not boxes or src is None:
                    continue
                items.append({"id": image_id, "w": src.get("width"), "h": src.get("height"),
                              "name": display_name(src), "page": (src.get("provenance") or {}).get("page_url"),
                              "text": _search_text(src),
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
    @staticmethod
    def fresh_detection(rec: dict | None, box: dict) -> dict | None:
        """`rec` if it is about this detected box, None if it is about an earlier one."""
        if rec is not None and dec.iou(rec["orig_box"], box["box"]) < dec.MATCH_IOU:
            return None  # about an earlier detection at this index: stale
        return rec

    @staticmethod
    def _by_image(decided: dict) -> dict[str, dict[int, dict]]:
        """Detection decisions grouped per image: one pass over the (usually few) decisions
        instead of a lookup per box of 44,000 images."""
        out: dict[str, dict[int, dict]] = {}
        for (kind, key), rec in decided.items():
            if kind == "detection":
                image_id, _, idx = key.rpartition(":")
                out.setdefault(image_id, {})[int(idx)] = rec
        return out

    # ------------------------------------------------------------------ listings
    def list_detections(self, decided: dict, status: str = "all", min_conf: float | None = None,
                        max_conf: float | None = None, start: int = 0, per_page: int = 200,
                        q: str = "") -> dict:
        got = self.detection_images()
        if got is None:
            return _empty("detection", "no detections yet: run the detect stage")
        images, _ = got
        by_img, want = self._by_image(decided), _wants(status)
        no_spider = dec.no_spider_images(decided)
        q = q.strip().lower()
        conf_filter = min_conf is not None or max_conf is not None
        counts: Counter = Counter()
        positions = []

        def box_states(it, recs):
            return [(b, self.fresh_detection(recs.get(i), b) if recs else None) for i, b in enumerate(it["boxes"])]

        for pos, it in enumerate(images):
            if q and q not in it["text"]:
                continue
            recs = by_img.get(it["id"])
            if recs is None and not conf_filter:  # the common case: nothing decided here yet
                counts[None] += len(it["boxes"])
                if want(None):
                    positions.append(pos)
                continue
            match = False
            for b, rec in box_states(it, recs):
                d = rec["decision"] if rec else None
                counts[d] += 1
                match = match or (want(d) and _in_range(b["conf"], min_conf, max_conf))
            if match:
                positions.append(pos)
        win = _window(positions, start, per_page)
        items = []
        for pos in win.pop("positions"):
            it = images[pos]
            boxes = []
            for i, (b, rec) in enumerate(box_states(it, by_img.get(it["id"]))):
                d = rec["decision"] if rec else None
                boxes.append({"i": i, "key": dec.detection_key(it["id"], i), "orig_box": b["box"],
                              "box": rec["box"] if rec else b["box"], "conf": b["conf"], "decision": d,
                              "match": want(d) and _in_range(b["conf"], min_conf, max_conf)})
            items.append({"id": it["id"], "w": it["w"], "h": it["h"], "name": it["name"],
                          "page": it["page"], "no_spider": it["id"] in no_spider, "boxes": boxes})
        return {"message": None if images else "detect found no boxes to review", "items": items,
                "images": len(images), "counts": _counts("detection", counts), **win}

    def list_crops(self, decided: dict, status: str = "all", min_conf: float | None = None,
                   max_conf: float | None = None, start: int = 0, per_page: int = 200,
                   q: str = "") -> dict:
        crops = self.crops()
        if crops is None:
            return _empty("crop", "no crops yet: run the crop stage")
        want, counts, positions, rows = _wants(status), Counter(), [], list(crops.items())
        mine = _of_kind(decided, "crop")
        q = q.strip().lower()
        for pos, (cid, r) in enumerate(rows):
            if q and q not in _search_text(r, str(r.get("image_id", ""))):
                continue
            rec = mine.get(cid)
            d = rec["decision"] if rec else None
            counts[d] += 1
            if want(d) and _in_range(r.get("conf"), min_conf, max_conf):
                positions.append(pos)
        win = _window(positions, start, per_page)
        items = []
        for pos in win.pop("positions"):
            cid, r = rows[pos]
            rec = mine.get(cid)
            items.append({"key": cid, "id": cid, "image_id": r.get("image_id"), "conf": r.get("conf"),
                          "name": display_name({"id": r.get("image_id"),
                                                "provenance": r.get("provenance")}),
                          "decision": rec["decision"] if rec else None})
        return {"message": None if crops else "the crop stage kept no crops", "items": items,
                "counts": _counts("crop", counts), **win}

    def list_pairs(self, decided: dict, status: str = "all", start: int = 0, per_page: int = 200,
                   **_ignored) -> dict:
        pairs = self.pairs()
        if pairs is None:
            return _empty("pair", "no pairs yet: run the evaluate stage")
        want, counts, positions = _wants(status), Counter(), []
        mine = _of_kind(decided, "pair")
        for r in pairs:
            rec = mine.get(r["fake"])
            d = rec["decision"] if rec else None
            counts[d] += 1
            if want(d):
                positions.append(r["n"])
        win = _window(positions, start, per_page)
        items = []
        for n in win.pop("positions"):
            r = pairs[n]
            rec = mine.get(r["fake"])
            items.append({"key": r["fake"], "n": n, "fake": r["fake"], "real": r["real"],
                          "distance": r.get("distance"), "decision": rec["decision"] if rec else None})
        return {"message": None if pairs else "evaluate wrote no pairs", "items": items,
                "counts": _counts("pair", counts), **win}


def _of_kind(decided: dict, kind: str) -> dict[str, dict]:
    return {key: rec for (k, key), rec in decided.items() if k == kind}


def _counts(kind: str, counts: Counter) -> dict:
    out = {"total": sum(counts.values()), "undecided": counts.get(None, 0)}
    for d in dec.DECISIONS[kind]:
        out[d] = counts.get(d, 0)
    return out
