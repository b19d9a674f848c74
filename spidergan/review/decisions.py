"""The review decisions log, `data/review/decisions.jsonl`: what a person said about the
machine's output. Detect's self-training and the crop stage read it.

One JSON object per line, append-only; for each `(kind, key)` the latest line wins:

* detection box: `{"kind": "detection", "key": "<image_id>:<box index>", "image_id": ...,
  "box": [x0, y0, x1, y1] (source pixels, possibly adjusted by dragging), "orig_box": [...],
  "decision": "accept" | "reject", "ts": <unix seconds>}`
* crop: `{"kind": "crop", "key": "<crop id>", "id": "<crop id>", "decision": "accept" | "reject", "ts": ...}`
* pair: `{"kind": "pair", "key": "<fake file>", "fake": ..., "real": ..., "decision": "copy" | "ok", "ts": ...}`
* whole image: `{"kind": "image", "key": "<image id>", "image_id": ..., "decision": "no_spider", "ts": ...}`:
  no spider anywhere in the photo. The detector trains on it as a background image (a negative),
  self-training proposes nothing there, and the crop stage cuts nothing from it.

Hand-written lines may be shorter (see `normalise`): `{"image_id": ..., "box": [...],
"decision": "accept"}` is a detection decision keyed by its image and box.

Undo is written as the state it returns to, never as a stack operation, so a reader needs no
replay: undoing re-appends the previous record (marked `"undo": true`), or, when the key had
no decision before, a record with `"decision": "clear"`. `latest()` drops cleared keys. The file
is therefore a full history and its last line per key is the truth.

Every line is written with `manifest.Appender` (flush + fsync per line): a killed server loses
at most the line being written, and a torn last line is ignored on read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from spidergan import manifest
from spidergan.boxes import iou

DECISIONS = {"detection": ("accept", "reject"), "crop": ("accept", "reject"), "pair": ("copy", "ok"),
             "image": ("no_spider",)}
NAME_FIELD = {"crop": "id", "pair": "fake", "image": "image_id"}  # the field a key names
CLEAR = "clear"
DEFAULT_PATH = Path("data/review/decisions.jsonl")
MATCH_IOU = 0.7  # a detection decision holds while its orig_box overlaps the box at its index this much

Key = tuple[str, str]


class DecisionError(ValueError):
    """A record that must not be written (unknown kind or decision, malformed box)."""


def detection_key(image_id: str, index: int) -> str:
    return f"{image_id}:{int(index)}"


def _check_box(box: Any, name: str) -> list[float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise DecisionError(f"{name} must be [x0, y0, x1, y1], got {box!r}")
    out = []
    for v in box:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise DecisionError(f"{name} must hold finite numbers, got {box!r}")
        out.append(round(float(v), 2))
    if not (out[0] < out[2] and out[1] < out[3]):
        raise DecisionError(f"{name} must have x0 < x1 and y0 < y1, got {box!r}")
    return out


def validate(record: dict) -> dict:
    """A checked copy of `record` with `ts` filled in; raises DecisionError."""
    if not isinstance(record, dict):
        raise DecisionError("a decision is a JSON object")
    rec = dict(record)
    kind, key, decision = rec.get("kind"), rec.get("key"), rec.get("decision")
    if kind not in DECISIONS:
        raise DecisionError(f"kind must be one of {', '.join(DECISIONS)}, got {kind!r}")
    if not isinstance(key, str) or not key:
        raise DecisionError("key must be a non-empty string")
    if decision != CLEAR and decision not in DECISIONS[kind]:
        allowed = ", ".join(DECISIONS[kind] + (CLEAR,))
        raise DecisionError(f"a {kind} decision must be one of {allowed}, got {decision!r}")
    if kind == "detection":
        image_id, sep, index = key.rpartition(":")
        if not sep or not image_id or not index.isdigit():
            raise DecisionError(f"detection key must be '<image_id>:<box index>', got {key!r}")
        rec.setdefault("image_id", image_id)
        if rec["image_id"] != image_id:
            raise DecisionError(f"image_id {rec['image_id']!r} does not match key {key!r}")
        if decision != CLEAR:
            rec["box"] = _check_box(rec.get("box"), "box")
            rec["orig_box"] = _check_box(rec.get("orig_box", rec["box"]), "orig_box")
    else:
        rec.setdefault(NAME_FIELD[kind], key)
    ts = rec.get("ts")
    if ts is None:
        rec["ts"] = time.time()
    elif isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise DecisionError(f"ts must be unix seconds, got {ts!r}")
    return rec


def append(path: str | Path, record: dict) -> dict:
    """Validate and append one decision durably (one line, flushed and fsynced). Returns it."""
    rec = validate(record)
    with manifest.Appender(path) as a:
        a.append(rec)
    return rec


def normalise(record: Any) -> dict | None:
    """A line as read, in the form `fold` keys, or None for a line that decides nothing.

    The file is edited by hand too, so the short forms are accepted: a line with `image_id` and
    `box` is a detection without saying so; a detection without `key` is keyed by its image and
    rounded box (`"<image_id>@x0,y0,x1,y1"`), `orig_box` defaults to `box`; a crop line may name
    only `id`, a pair line only `fake`, and `{"image_id": ..., "decision": "no_spider"}` marks a
whole image. Unknown kinds or decisions are ignored, not errors.
    """
    if not isinstance(record, dict):
        return None
    decision = record.get("decision")
    kind = record.get("kind") or ("image" if decision == "no_spider"
                                  else "detection" if "image_id" in record else None)
    if kind not in DECISIONS or (decision != CLEAR and decision not in DECISIONS[kind]):
        return None
    rec = dict(record, kind=kind)
    if kind == "detection":
        image_id = rec.get("image_id")
        box = rec.get("orig_box") or rec.get("box")
        if "key" not in rec:
            try:
                box = _check_box(box, "box")
            except DecisionError:
                return None
            if image_id is None:
                return None
            rec["key"] = f"{image_id}@{','.join(str(int(round(v))) for v in box)}"
        elif image_id is None:
            rec["image_id"] = str(rec["key"]).rpartition(":")[0]
        if decision != CLEAR:
            try:
                rec["box"] = _check_box(rec.get("box", box), "box")
                rec["orig_box"] = _check_box(rec.get("orig_box", rec["box"]), "orig_box")
            except DecisionError:
                return None
    else:
        name = NAME_FIELD[kind]
        rec.setdefault("key", rec.get(name))
        if not isinstance(rec["key"], str) or not rec["key"]:
            return None
        rec.setdefault(name, rec["key"])
    return rec


def iter_decisions(path: str | Path = DEFAULT_PATH) -> Iterator[dict]:
    """Every usable record in file order (history), normalised; a missing file yields nothing."""
    for r in manifest.iter_records(path):
        rec = normalise(r)
        if rec is not None:
            yield rec


def fold(records: Iterable[dict], into: dict[Key, dict] | None = None) -> dict[Key, dict]:
    """Apply records in order: the latest per (kind, key) wins, `clear` removes the key."""
    out = {} if into is None else into
    for r in records:
        r = normalise(r)
        if r is None:
            continue
        k = (r["kind"], r["key"])
        if r.get("decision") == CLEAR:
            out.pop(k, None)
        else:
            out[k] = r
    return out


def latest(path: str | Path = DEFAULT_PATH) -> dict[Key, dict]:
    """The current decision per `(kind, key)`; keys that were cleared by undo are absent."""
    return fold(manifest.iter_records(path))  # fold normalises each line once


# --------------------------------------------------------------------------- for the stages
class DetectionDecisions:
    """The detection decisions of a log state, matched to boxes, for the crop stage and for
    detect's self-training.

    A decision holds for a box while its `orig_box` (the box as it was proposed) overlaps that
    box with IoU >= `match_iou`: after detect re-runs and its boxes move, a decision about a
    different box is ignored. The review app's decision for the box at the same index is tried
    first; otherwise the image's decision whose `orig_box` overlaps the box most (hand-written
    lines, and boxes proposed by another model, such as self-training candidates).
    """

    def __init__(self, decisions: dict[Key, dict], match_iou: float = MATCH_IOU):
        self.match_iou = match_iou
        self._by_key: dict[str, dict] = {}
        self._by_image: dict[str, list[dict]] = {}
        for (kind, key), r in decisions.items():
            if kind == "detection":
                self._by_key[key] = r
                self._by_image.setdefault(str(r["image_id"]), []).append(r)

    def __len__(self) -> int:
        return len(self._by_key)

    def match(self, image_id: str, box, index: int | None = None) -> dict | None:
        """The decision record for `box` of `image_id` (the box at `index` of its detections)."""
        if index is not None:
            rec = self._by_key.get(detection_key(image_id, index))
            if rec is not None and iou(rec["orig_box"], box) >= self.match_iou:
                return rec
        best, best_iou = None, self.match_iou
        for rec in self._by_image.get(str(image_id), ()):
            v = iou(rec["orig_box"], box)
            if v >= best_iou:
                best, best_iou = rec, v
        return best

    def apply(self, image_id: str, boxes: list[dict]) -> list[dict]:
        """One image's detected boxes (detections.jsonl `boxes`) after review.

        Each box comes back with `"index"` (its position, so crop ids stay stable) and
        `"review"`: "accept" (the box takes the reviewed, possibly dragged, coordinates),
        "reject", or None (not reviewed).
        """
        out = []
        for i, b in enumerate(boxes):
            rec = self.match(image_id, b["box"], i)
            nb = dict(b, index=i, review=rec["decision"] if rec else None)
            if rec is not None and rec["decision"] == "accept":
                nb["box"] = list(rec["box"])
            out.append(nb)
        return out

    def digest(self) -> str:
        """Changes whenever a decision does (for outputs that depend on them)."""
        rows = sorted((k, r["decision"], r["box"], r["orig_box"]) for k, r in self._by_key.items())
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def no_spider_images(decisions: dict[Key, dict]) -> set[str]:
    """Image ids a person marked "no spider in this image"."""
    return {key for key, v in verdicts(decisions, "image").items() if v == "no_spider"}


def verdicts(decisions: dict[Key, dict], kind: str) -> dict[str, str]:
    """`{key: decision}` for one kind, e.g. `verdicts(latest(p), "crop")` -> {crop_id: "reject"}."""
    return {key: r["decision"] for (k, key), r in decisions.items() if k == kind}


# --------------------------------------------------------------------------- for the server
class DecisionLog:
    """The log as a live, thread-safe view for the review server.

    The latest-per-key state is kept in memory and refreshed from the file when its identity or
    size changes (another process, a `git checkout`), reading only the new lines when it grew.
    Appends go through one open Appender, reopened when the file was replaced.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._state: dict[Key, dict] = {}
        self._ino: int | None = None
        self._offset = 0  # bytes parsed so far (complete lines only)
        self._appender: manifest.Appender | None = None
        self._app_ino: int | None = None

    def _stat(self):
        try:
            return os.stat(self.path)
        except FileNotFoundError:
            return None

    def _refresh(self) -> None:
        st = self._stat()
        if st is None:
            self._state, self._ino, self._offset = {}, None, 0
            return
        if st.st_ino == self._ino and st.st_size == self._offset:
            return
        if st.st_ino == self._ino and st.st_size > self._offset:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read(st.st_size - self._offset)
            end = chunk.rfind(b"\n") + 1  # a partial last line waits for its newline
            try:
                recs = [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]
            except json.JSONDecodeError:
                recs = None
            if recs is not None:
                fold(recs, self._state)
                self._offset += end
                return
        # replaced, truncated or unreadable increment: read it all again, from one read
        with open(self.path, "rb") as f:
            data = f.read()
        end = data.rfind(b"\n") + 1
        recs = []
        for n, line in enumerate(data[:end].splitlines(), 1):
            if line.strip():
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ValueError(f"{self.path}:{n}: corrupt decision line") from None
        self._state = fold(recs)
        self._ino, self._offset = st.st_ino, end

    def snapshot(self) -> dict[Key, dict]:
        """The current state (a shallow copy, safe to read while others write)."""
        with self._lock:
            self._refresh()
            return dict(self._state)

    def get(self, kind: str, key: str) -> dict | None:
        with self._lock:
            self._refresh()
            return self._state.get((kind, key))

    def version(self) -> str:
        """Changes whenever the file does: tabs poll it to see each other's decisions."""
        st = self._stat()
        return "0" if st is None else f"{st.st_ino}-{st.st_size}"

    def append(self, record: dict) -> tuple[dict, str, str]:
        """Append durably; returns the record and the log version just before and after it (a
        tab whose known version differs from `before` missed someone else's decision)."""
        rec = validate(record)
        with self._lock:
            before = self.version()
            st = self._stat()
            if self._appender is None or st is None or st.st_ino != self._app_ino or \
                    not self._ends_whole(st):  # reopening repairs a line torn by another writer
                if self._appender is not None:
                    self._appender.close()
                self._appender = manifest.Appender(self.path)
                self._app_ino = os.stat(self.path).st_ino
            self._refresh()  # fold in foreign lines first so ours stays the latest
            self._appender.append(rec)
            self._refresh()
            return rec, before, self.version()

    def _ends_whole(self, st) -> bool:
        if st.st_size == 0:
            return True
        with open(self.path, "rb") as f:
            f.seek(st.st_size - 1)
            return f.read(1) == b"\n"

    def close(self) -> None:
        with self._lock:
            if self._appender is not None:
                self._appender.close()
                self._appender = None
