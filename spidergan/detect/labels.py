"""Detector labels: the YOLO txt format, importers from labelling tools, validation.

Labels live in `data/labels/<image id>.txt`, one line per spider, YOLO format:

    0 cx cy w h          class 0 = spider; centre and size normalised to the image (0..1)

The image id is the raw image's id from `data/raw/manifest.jsonl`. Box the whole spider, legs
included, every time: the original project drew boxes inconsistently (sometimes the body,
sometimes the legs too) and its detector learnt an "inner" and an "outer" spider. An empty file
is a labelled image with no spider (a negative example).

Importers read what labelling tools export and write those files:

* Pascal VOC XML (LabelImg): one `.xml` per image, or a folder of them.
* COCO JSON (CVAT "COCO 1.0", Roboflow, ...): `images`, `annotations` (bbox = x, y, w, h in
  pixels), `categories`.
* Label Studio JSON export: a list of tasks; rectangle results in percent of the image.
* YOLO txt files from another project: `<photo stem>.txt` (any folder layout), matched to image
  ids through the raw manifest (a folder photo's original file name or relative path, a Flickr
  photo id). Every class id counts as spider unless `classes` names the ids that do; an empty
  file says "no spider in this photo" and is imported as a negative.

Each imported box is validated: its image must be a raw image (matched by id, file name or the
file name recorded in its provenance), the box must have an area and lie inside the image
(slight overshoot from a drag past the edge is clipped, up to `EDGE_TOLERANCE` of the side).
Anything rejected is reported with a reason; nothing is dropped silently. Object classes other
than spider (see `SPIDER_NAMES`; YOLO: ids outside `classes`) are skipped and counted.

Review decisions (`data/review/decisions.jsonl`, written by the review app or by hand) are read
by `spidergan.review.decisions`, the one reader of that file.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from spidergan import atomic, manifest

SPIDER_NAMES = ("spider",)
EDGE_TOLERANCE = 0.02
FORMATS = ("voc", "coco", "labelstudio", "yolo")

HOW_TO_LABEL = """\
No labels found in {folder}/. The detector learns from about 100 labelled images.
Draw one box around each whole spider, legs included (always the same way: inconsistent
boxes teach the detector an "inner" and an "outer" spider), then import the export:

  LabelImg (Pascal VOC XML):   spidergan import-labels --format voc  path/to/xml_folder
  CVAT / others (COCO JSON):   spidergan import-labels --format coco annotations.json
  Label Studio (JSON export):  spidergan import-labels --format labelstudio export.json
  YOLO txt (another project):  spidergan import-labels --format yolo path/to/labels_folder

or write YOLO files yourself: {folder}/<image id>.txt, one line per spider
`0 cx cy w h` (normalised 0..1). Image ids and files are listed in data/raw/manifest.jsonl.
With scrape.source=synthetic the labels come from the ground truth instead."""


class NoLabels(RuntimeError):
    """The labels folder holds nothing to train on; the message says how to label."""

    for_people = True  # printed without a traceback (spidergan.outcome)


@dataclass
class ImportReport:
    written: dict = field(default_factory=dict)      # image id -> number of boxes
    rejected: list = field(default_factory=list)     # {"item", "reason", "detail"}
    skipped_classes: dict = field(default_factory=dict)
    clipped: int = 0
    spider_classes: dict = field(default_factory=dict)  # class taken as spider -> boxes

    def reject(self, item: str, reason: str, detail: str = "") -> None:
        self.rejected.append({"item": item, "reason": reason, "detail": detail})

    def counts(self) -> dict:
        reasons: dict = {}
        for r in self.rejected:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        return {"images": len(self.written), "boxes": sum(self.written.values()),
                "negatives": sum(1 for v in self.written.values() if v == 0),
                "rejected": len(self.rejected), "rejected_by_reason": reasons,
                "clipped": self.clipped, "skipped_classes": dict(self.skipped_classes),
                "spider_classes": dict(self.spider_classes)}

    def text(self) -> str:
        c = self.counts()
        from spidergan.outcome import reasons_text

        by = reasons_text(c["rejected_by_reason"]) if c["rejected"] else ""
        lines = [f"imported {c['boxes']} boxes on {c['images']} images "
                 f"({c['negatives']} of them without a spider); "
                 f"rejected {c['rejected']}{f' ({by})' if by else ''}; clipped {c['clipped']}"]
        if self.spider_classes:
            lines.append("boxes per class taken as spider: " + ", ".join(
                f"{k} x{v}" for k, v in sorted(self.spider_classes.items())))
        if self.skipped_classes:
            lines.append("skipped other classes: " + ", ".join(
                f"{k} x{v}" for k, v in sorted(self.skipped_classes.items())))
        for r in self.rejected:
            lines.append(f"  rejected {r['item']}: {r['reason']} {r['detail']}".rstrip())
        return "\n".join(lines)


# --------------------------------------------------------------------------- geometry
def check_box(box, width: int, height: int, tolerance: float = EDGE_TOLERANCE):
    """Validated, clipped [x0, y0, x1, y1] in pixels, or raise ValueError(reason, detail)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError("bad_box", f"not four numbers: {box!r}") from None
    if any(v != v for v in (x0, y0, x1, y1)):  # NaN
        raise ValueError("bad_box", f"not a number in {box!r}")
    if x1 <= x0 or y1 <= y0:
        raise ValueError("empty_box", f"{box!r} has no area")
    tx, ty = tolerance * width, tolerance * height
    if x0 < -tx or y0 < -ty or x1 > width + tx or y1 > height + ty:
        raise ValueError("outside_image", f"{[round(v, 1) for v in box]} not inside {width}x{height}")
    c = [max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)]
    if c[2] - c[0] < 1 or c[3] - c[1] < 1:
        raise ValueError("empty_box", f"{box!r} is less than a pixel wide once clipped")
    return c, c != [x0, y0, x1, y1]


def to_yolo_line(box, width: int, height: int) -> str:
    x0, y0, x1, y1 = box
    return (f"0 {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
            f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")


def from_yolo_line(line: str, width: int, height: int) -> list[float]:
    parts = line.split()
    if len(parts) != 5:
        raise ValueError("bad_line", f"expected 5 fields, got {len(parts)}: {line!r}")
    try:
        cls = int(float(parts[0]))
        cx, cy, w, h = (float(v) for v in parts[1:])
    except ValueError:
        raise ValueError("bad_line", f"not numbers: {line!r}") from None
    if cls != 0:
        raise ValueError("bad_class", f"class {cls} (only 0 = spider exists here; import another "
                                      "project's files with `spidergan import-labels --format yolo`, "
                                      "which takes every class id as spider)")
    if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
        raise ValueError("outside_image", f"values must be normalised 0..1: {line!r}")
    return [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]


# --------------------------------------------------------------------------- reading labels
def read_folder(folder: str | Path, raw_dir: str | Path = "data/raw"):
    """Validated labels of `folder`: ({image id: [boxes in px]}, rejects).

    A label file whose image is not in the raw manifest, or with a bad line, is rejected and
    reported (a bad line rejects the whole file: a half-labelled image would teach the detector
    that the dropped spider is background).
    """
    folder = Path(folder)
    raw = manifest.read_by_id(Path(raw_dir) / "manifest.jsonl")
    labels, rejects = {}, []
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        iid = path.stem
        rec = raw.get(iid)
        if rec is None:
            rejects.append({"id": iid, "reason": "image_missing",
                            "detail": f"{path.name}: no raw image with id {iid!r}"})
            continue
        if not (Path(raw_dir) / rec["file"]).is_file():
            rejects.append({"id": iid, "reason": "image_missing",
                            "detail": f"{rec['file']} is in the manifest but not on disk"})
            continue
        w, h = int(rec["width"]), int(rec["height"])
        boxes = []
        try:
            for line in path.read_text().splitlines():
                if line.strip():
                    box, _ = check_box(from_yolo_line(line, w, h), w, h)
                    boxes.append(box)
        except ValueError as e:
            reason, detail = e.args if len(e.args) == 2 else ("bad_line", str(e))
            rejects.append({"id": iid, "reason": reason, "detail": f"{path.name}: {detail}"})
            continue
        except UnicodeDecodeError:
            rejects.append({"id": iid, "reason": "bad_line", "detail": f"{path.name}: not text"})
            continue
        labels[iid] = boxes
    return labels, rejects


def write_label(folder: str | Path, image_id: str, boxes, width: int, height: int) -> None:
    text = "".join(to_yolo_line(b, width, height) + "\n" for b in boxes)
    atomic.write_text(Path(folder) / f"{image_id}.txt", text)


# --------------------------------------------------------------------------- importers
_LS_PREFIX = re.compile(r"^[0-9a-f]{8}-")


class _ImageIndex:
    """Find the raw image a labelling tool's file name refers to."""

    def __init__(self, raw_dir: str | Path):
        self.raw_dir = Path(raw_dir)
        self.by_id = manifest.read_by_id(self.raw_dir / "manifest.jsonl")
        self.by_name: dict[str, str] = {}
        self.by_stem: dict[str, set] = {}
        self.paths: dict[str, str] = {}   # folder source: relative path without suffix
        # photos the scrape stage turned away, by stem: "IMG_0010 was rejected: too_small"
        self.rejected_stems: dict[str, str] = {}
        for r in manifest.iter_records(self.raw_dir / "rejects.jsonl"):
            rel = str(r.get("detail", "")).split(":", 1)[0]
            if rel:
                why = f"{rel}: {r.get('reason')}"
                self.rejected_stems[rel.rsplit(".", 1)[0]] = why   # the path first, then the stem
                self.rejected_stems.setdefault(Path(rel).stem, why)
        for iid, rec in self.by_id.items():
            names = [Path(rec["file"]).name, Path(rec["file"]).stem]
            prov = rec.get("provenance") or {}
            for k in ("path", "filename", "file", "original_name", "url"):
                if isinstance(prov.get(k), str) and prov[k]:
                    names += [Path(prov[k]).name, Path(prov[k]).stem]
            if prov.get("photo_id"):
                names.append(str(prov["photo_id"]))
            for n in names:
                self.by_name.setdefault(n, iid)
            # YOLO files are named by stem: every stem an image answers to, and its full path
            keys = {iid, Path(rec["file"]).stem}
            if isinstance(prov.get("path"), str) and prov["path"]:
                keys.add(Path(prov["path"]).stem)
                self.paths[iid] = prov["path"].rsplit(".", 1)[0]
            if isinstance(prov.get("url"), str) and prov["url"]:
                keys.add(Path(prov["url"]).stem)           # Flickr: <id>_<secret>_b
            if prov.get("photo_id"):
                keys.add(str(prov["photo_id"]))
            for k in keys:
                self.by_stem.setdefault(k, set()).add(iid)

    def find_stem(self, rel: str):
        """(raw record, None) for a YOLO file at `rel` (relative to the label folder, without
        its suffix), or (None, (reason, detail)). The stem picks the image; when several photos
        share it (IMG_0001 in two folders), the folders of `rel` decide."""
        parts = rel.replace("\\", "/").split("/")
        found = self.by_stem.get(parts[-1], set())
        if len(found) > 1:
            # the photo whose relative path is the longest common tail of the label's path
            def tail(iid):
                q = self.paths.get(iid, "").split("/")
                n = 0
                while n < min(len(q), len(parts)) and q[-1 - n] == parts[-1 - n]:
                    n += 1
                return n
            best = max(tail(i) for i in found)
            found = {i for i in found if tail(i) == best}
        if not found:
            why = self.rejected_stems.get("/".join(parts)) or self.rejected_stems.get(parts[-1])
            if why:
                return None, ("image_missing", f"the photo was rejected by the scrape stage ({why})")
            return None, ("image_missing", f"no photo in data/raw/manifest.jsonl is named "
                                           f"{parts[-1]!r} (original file name, id or photo id)")
        if len(found) > 1:
            return None, ("ambiguous", f"{parts[-1]!r} names {len(found)} photos: "
                                       f"{', '.join(sorted(found)[:3])}; keep the folder layout")
        rec = self.by_id[found.pop()]
        if not (self.raw_dir / rec["file"]).is_file():
            return None, ("image_missing", f"{rec['file']} is in the manifest but not on disk")
        return rec, None

    def find(self, name: str):
        """The raw record for `name` or None (also None when the name fits several photos)."""
        name = str(name).replace("\\", "/")
        base = name.rsplit("/", 1)[-1]
        # the folders of the name decide between photos of the same file name
        rec, why = self.find_stem(name.rsplit(".", 1)[0] if "." in base else name)
        if rec is not None:
            return rec
        if why and why[0] == "ambiguous":
            return None
        for cand in (base, Path(base).stem, _LS_PREFIX.sub("", base), Path(_LS_PREFIX.sub("", base)).stem):
            iid = self.by_id.get(cand) and cand or self.by_name.get(cand)
            if iid and (self.raw_dir / self.by_id[iid]["file"]).is_file():
                return self.by_id[iid]
        return None


def _is_spider(name: str, classes: Iterable[str]) -> bool:
    return str(name).strip().lower() in {c.lower() for c in classes}


def _add(report: ImportReport, store: dict, index: _ImageIndex, item: str, name: str, boxes,
         sizes=None) -> None:
    """Validate one image's boxes (pixels) and stage them for writing."""
    rec = index.find(name)
    if rec is None:
        report.reject(item, "image_missing", f"{name!r} is not an image in data/raw")
        return
    w, h = int(rec["width"]), int(rec["height"])
    if sizes and all(sizes) and (int(sizes[0]), int(sizes[1])) != (w, h):
        report.reject(item, "size_mismatch",
                      f"labelled at {sizes[0]}x{sizes[1]}, raw image is {w}x{h}")
        return
    good = store.setdefault(rec["id"], [])
    for b in boxes:
        try:
            box, clipped = check_box(b, w, h)
        except ValueError as e:
            report.reject(item, *e.args)
            continue
        report.clipped += int(clipped)
        good.append(box)


def import_voc(src: str | Path, raw_dir, classes, report: ImportReport) -> dict:
    src = Path(src)
    files = sorted(src.rglob("*.xml")) if src.is_dir() else [src]
    index, store = _ImageIndex(raw_dir), {}
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError) as e:
            report.reject(f.name, "unreadable", str(e))
            continue
        name = root.findtext("filename") or root.findtext("path") or f.stem
        size = root.find("size")
        sizes = None
        if size is not None:
            try:
                sizes = (int(float(size.findtext("width") or 0)), int(float(size.findtext("height") or 0)))
            except ValueError:
                sizes = None
        boxes = []
        for obj in root.findall("object"):
            cname = obj.findtext("name") or ""
            if not _is_spider(cname, classes):
                report.skipped_classes[cname] = report.skipped_classes.get(cname, 0) + 1
                continue
            bb = obj.find("bndbox")
            try:
                boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
            except (AttributeError, TypeError, ValueError):
                report.reject(f.name, "bad_box", f"object {cname!r} without a numeric bndbox")
        _add(report, store, index, f.name, name, boxes, sizes)
    return store


def import_coco(src: str | Path, raw_dir, classes, report: ImportReport) -> dict:
    data = _load_json(src, report)
    if not isinstance(data, dict) or "images" not in data:
        if data is not None:
            report.reject(str(src), "not_coco", "no 'images' list in the file")
        return {}
    index, store = _ImageIndex(raw_dir), {}
    cats = {c.get("id"): c.get("name", "") for c in data.get("categories", [])}
    by_image: dict = {im.get("id"): [] for im in data["images"]}
    for a in data.get("annotations", []):
        cname = cats.get(a.get("category_id"), str(a.get("category_id")))
        if not _is_spider(cname, classes):
            report.skipped_classes[cname] = report.skipped_classes.get(cname, 0) + 1
            continue
        if a.get("image_id") not in by_image:
            report.reject(f"annotation {a.get('id')}", "image_missing",
                          f"image_id {a.get('image_id')} not in the file's images")
            continue
        bb = a.get("bbox") or []
        if len(bb) != 4:
            report.reject(f"annotation {a.get('id')}", "bad_box", f"bbox {bb!r}")
            continue
        x, y, w, h = bb
        by_image[a["image_id"]].append([x, y, x + w, y + h])
    for im in data["images"]:
        name = im.get("file_name", "")
        _add(report, store, index, name, name, by_image[im.get("id")], (im.get("width"), im.get("height")))
    return store


def import_labelstudio(src: str | Path, raw_dir, classes, report: ImportReport) -> dict:
    data = _load_json(src, report)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        if data is not None:
            report.reject(str(src), "not_labelstudio", "expected a list of tasks")
        return {}
    index, store = _ImageIndex(raw_dir), {}
    for task in data:
        item = f"task {task.get('id')}"
        name = (task.get("data") or {}).get("image") or (task.get("data") or {}).get("img") or ""
        anns = task.get("annotations") or task.get("completions") or []
        anns = [a for a in anns if not a.get("was_cancelled")]
        if not anns:
            report.reject(item, "not_annotated", f"{name!r} has no annotation")
            continue
        boxes, sizes = [], None
        for r in anns[-1].get("result", []):  # the latest annotation of the task
            if r.get("type") not in ("rectanglelabels", "rectangle"):
                continue
            v = r.get("value") or {}
            cnames = v.get("rectanglelabels") or ["spider"]
            if not any(_is_spider(c, classes) for c in cnames):
                for c in cnames:
                    report.skipped_classes[c] = report.skipped_classes.get(c, 0) + 1
                continue
            if v.get("rotation"):
                report.reject(item, "rotated_box", f"rotation {v['rotation']} is not supported")
                continue
            ow, oh = r.get("original_width"), r.get("original_height")
            rec = index.find(name)
            if rec is not None and not (ow and oh):
                ow, oh = rec["width"], rec["height"]
            sizes = (ow, oh)
            try:
                x, y, w, h = (float(v[k]) for k in ("x", "y", "width", "height"))
            except (KeyError, TypeError, ValueError):
                report.reject(item, "bad_box", f"value {v!r}")
                continue
            if not (ow and oh):
                report.reject(item, "image_missing", f"{name!r}: no size to scale percentages")
                continue
            boxes.append([x / 100 * ow, y / 100 * oh, (x + w) / 100 * ow, (y + h) / 100 * oh])
        _add(report, store, index, item, name, boxes, sizes)
    return store


def import_yolo(src: str | Path, raw_dir, classes, report: ImportReport) -> dict:
    """YOLO txt files under `src` (any depth), `<photo stem>.txt`, one `cls cx cy w h` line per
    box. `classes`: the class ids that are spiders, or None for every id. A file with a bad line
    is rejected whole (half a photo's spiders would teach that the rest is background); an
    empty file is a photo without a spider."""
    src = Path(src)
    files = sorted(src.rglob("*.txt")) if src.is_dir() else [src]
    index, store = _ImageIndex(raw_dir), {}
    names = {}
    names_file = (src if src.is_dir() else src.parent) / "classes.txt"
    if names_file.is_file():  # LabelImg writes the class names beside the labels
        names = {k: n.strip() for k, n in enumerate(names_file.read_text().splitlines()) if n.strip()}
    for f in files:
        if f.name == "classes.txt":
            continue
        rel = f.relative_to(src).with_suffix("").as_posix() if src.is_dir() else f.stem
        item = f.relative_to(src).as_posix() if src.is_dir() else f.name
        rec, why = index.find_stem(rel)
        if rec is None:
            report.reject(item, *why)
            continue
        if rec["id"] in store:
            report.reject(item, "duplicate", f"a second label file for {rec['id']}")
            continue
        w, h = int(rec["width"]), int(rec["height"])
        boxes, taken, skipped, bad = [], {}, {}, None
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            report.reject(item, "unreadable", str(e))
            continue
        for n, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                bad = ("bad_line", f"line {n}: expected `cls cx cy w h`, got {len(parts)} fields")
                break
            try:
                cls = int(parts[0])
                cx, cy, bw, bh = (float(v) for v in parts[1:])
            except ValueError:
                bad = ("bad_line", f"line {n}: not numbers: {line.strip()!r}")
                break
            label = f"{cls} ({names[cls]})" if cls in names else str(cls)
            if classes is not None and cls not in classes:
                skipped[label] = skipped.get(label, 0) + 1
                continue
            try:
                box, clipped = check_box([(cx - bw / 2) * w, (cy - bh / 2) * h,
                                          (cx + bw / 2) * w, (cy + bh / 2) * h], w, h)
            except ValueError as e:
                bad = (e.args[0], f"line {n}: {e.args[1]}")
                break
            report.clipped += int(clipped)
            boxes.append(box)
            taken[label] = taken.get(label, 0) + 1
        if bad:
            report.reject(item, *bad)
            continue
        for k, v in taken.items():
            report.spider_classes[k] = report.spider_classes.get(k, 0) + v
        for k, v in skipped.items():
            report.skipped_classes[k] = report.skipped_classes.get(k, 0) + v
        store[rec["id"]] = boxes
    return store


def _load_json(src, report: ImportReport):
    try:
        return json.loads(Path(src).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        report.reject(str(src), "unreadable", str(e))
        return None


_IMPORTERS = {"voc": import_voc, "coco": import_coco, "labelstudio": import_labelstudio,
              "yolo": import_yolo}
assert set(_IMPORTERS) == set(FORMATS)


def import_labels(fmt: str, src: str | Path, out: str | Path = "data/labels",
                  raw_dir: str | Path = "data/raw", classes: Iterable | None = None,
                  dry_run: bool = False) -> ImportReport:
    """Import a labelling tool's export into YOLO files in `out`; returns the report.

    `classes`: names meaning spider (voc, coco, labelstudio; default `SPIDER_NAMES`), or for
    yolo the class ids meaning spider (default: every id)."""
    if fmt not in _IMPORTERS:
        raise ValueError(f"unknown label format {fmt!r}; one of {', '.join(_IMPORTERS)}")
    if not Path(src).exists():
        raise FileNotFoundError(f"label export not found: {src}")
    if not manifest.read_by_id(Path(raw_dir) / "manifest.jsonl"):
        raise FileNotFoundError(f"{raw_dir}/manifest.jsonl is missing or empty: labels are "
                                "matched to the scraped photos, run `dvc repro scrape` first")
    report = ImportReport()
    if fmt == "yolo":
        classes = None if classes is None else {int(c) for c in classes}
    else:
        classes = tuple(classes) if classes is not None else SPIDER_NAMES
    store = _IMPORTERS[fmt](src, raw_dir, classes, report)
    raw = manifest.read_by_id(Path(raw_dir) / "manifest.jsonl")
    for iid, boxes in store.items():
        report.written[iid] = len(boxes)
        if not dry_run:
            rec = raw[iid]
            write_label(out, iid, boxes, int(rec["width"]), int(rec["height"]))
    return report
