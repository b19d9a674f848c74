"""The one way into `data/raw/`, shared by every scrape source.

Every image passes `images.validate_bytes`, is written atomically (a temporary file renamed into
place), and only then gets its manifest line (appended and flushed one by one, so a killed run
resumes where it stopped). Inputs not taken (filtered, undecodable, too small, failed to
download) get a rejects line with a reason; nothing is dropped silently.

A run is incremental: `Ingest.reusable` finds an image already stored by an earlier run from the
same source key, so it is not fetched again. `Ingest.finish` rewrites the manifest and rejects
in the source's order for exactly the inputs of this run and removes files no record refers to,
so the output depends on the parameters, not on the history of runs.
"""

from __future__ import annotations

import csv
import hashlib
import re
import io
import os
import shutil
import time
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from spidergan import atomic, images, manifest
from spidergan.params import ScrapeParams

TEMP_SUFFIXES = (".tmp", ".part")
SYNC_EVERY_S = 1.0
COUNT_KEYS = ("listed", "downloaded", "written", "skipped_existing", "skipped", "rejected",
              "failed", "images")


class ScrapeError(RuntimeError):
    """A source cannot run (credentials, unknown group, missing folder): a message for people."""

    for_people = True  # printed without a traceback (spidergan.outcome)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Stored:
    """What `Ingest.store` wrote: the relative file, its size and checksums."""

    __slots__ = ("file", "width", "height", "sha256", "source_sha256", "reencoded")

    def __init__(self, file, width, height, sha, source_sha, reencoded):
        self.file, self.width, self.height = file, width, height
        self.sha256, self.source_sha256, self.reencoded = sha, source_sha, reencoded


class Ingest:
    """The single way into `data/raw/`: validate, write atomically, record, or reject.

    `store` is thread-safe (each id writes its own files); the bookkeeping calls (`listed`,
    `reusable`, `accept`, `reject`, `finish`) come from one thread. Records are appended as
    they finish; the final manifest is in the order of the `listed` calls.
    """

    def __init__(self, out: Path, p: ScrapeParams, source: str, desc: str | None = None):
        self.out = Path(out)
        self.p = p
        self.source = source
        self.images_dir = self.out / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.out)
        self.previous = manifest.read_by_id(self.out / "manifest.jsonl")
        self.previous_rejects = manifest.read_by_id(self.out / "rejects.jsonl")
        self.counts = {k: 0 for k in COUNT_KEYS}
        self.reasons: dict[str, int] = {}
        self.largest_too_small = 0  # shorter side of the largest image rejected as too small
        self._order: list[str] = []
        self._seen: set[str] = set()
        self._records: dict[str, dict] = {}
        self._rejects: dict[str, dict] = {}
        # each line is flushed to the OS at once (a killed process loses nothing written);
        # the fsync against power loss is batched, at most SYNC_EVERY_S apart, since one fsync
        # per photo would serialise the download pool on the disk
        self._man = manifest.Appender(self.out / "manifest.jsonl", fsync=False)
        self._rej = manifest.Appender(self.out / "rejects.jsonl", fsync=False)
        self._synced = time.monotonic()
        self.bar = tqdm(desc=desc or f"scrape {source}", unit="img", total=None)

    # ---------------------------------------------------------------- writing one image
    def store(self, item_id: str, data: bytes, tmp: Path | None = None) -> Stored:
        """Validate `data` and write it as images/<id>.jpg|png; raises images.ImageRejected.

        `tmp`, when given, is a temporary file in images/ holding exactly `data` (a download):
        kept bytes are renamed from it instead of written again. It is gone afterwards.
        """
        try:
            v = images.validate_bytes(data, min_side=self.p.min_side, max_pixels=self.p.max_pixels)
            rel = f"images/{item_id}{v.suffix}"
            target = self.out / rel
            source_sha = sha256(data)
            if v.keep_original:
                if tmp is not None:
                    atomic.adopt(tmp, target)
                else:
                    atomic.write_bytes(target, data)
                stored_sha = source_sha
            else:
                stored = images.encode(v)
                atomic.write_bytes(target, stored)
                stored_sha = sha256(stored)
            w, h = v.size
            return Stored(rel, w, h, stored_sha, source_sha, not v.keep_original)
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()

    def temp_path(self, item_id: str) -> Path:
        """A fresh temporary download path beside the target (removed at the next start)."""
        return self.images_dir / f".{item_id}.{os.urandom(4).hex()}.part"

    # ---------------------------------------------------------------- bookkeeping
    def listed(self, item_id: str) -> bool:
        """Note an input in source order; False for an id already seen in this run."""
        if item_id in self._seen:
            return False
        self._seen.add(item_id)
        self._order.append(item_id)
        self.counts["listed"] += 1
        return True

    def reusable(self, item_id: str, key_field: str, key) -> dict | None:
        """The earlier record for `item_id` if its provenance[key_field] equals `key`, its file
        still exists, and it still meets min_side; else None."""
        r = self.previous.get(item_id)
        if not r or r.get("source") != self.source:
            return None
        if (r.get("provenance") or {}).get(key_field) != key:
            return None
        if not (self.out / r["file"]).is_file():
            return None
        if min(r["width"], r["height"]) < self.p.min_side:
            return None
        return r

    def previous_reject(self, item_id: str, key) -> dict | None:
        """An earlier content rejection (not decodable, bomb) of the same source key: final."""
        r = self.previous_rejects.get(item_id)
        if r and r.get("key") == key and r.get("reason") in images.CONTENT_REASONS:
            return r
        return None

    def accept(self, item_id: str, stored: Stored, provenance: dict, *, reused: bool = False,
               record: dict | None = None) -> dict:
        if record is None:
            record = {"id": item_id, "file": stored.file, "source": self.source,
                      "width": stored.width, "height": stored.height, "sha256": stored.sha256,
                      "provenance": provenance}
        self._records[item_id] = record
        if reused:
            self.counts["skipped_existing"] += 1
        else:
            self._man.append(record)
            self.counts["written"] += 1
        self._tick()
        return record

    def reject(self, item_id: str, reason: str, detail: str = "", *, kind: str = "rejected",
               key=None) -> None:
        """Record an input not taken. kind: skipped (filtered before fetching), rejected
        (validation failed) or failed (could not be fetched)."""
        rec = {"id": item_id, "reason": reason, "detail": detail}
        if key is not None:
            rec["key"] = key
        self._rejects[item_id] = rec
        self._rej.append(rec)
        self.counts[kind] += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if reason == "too_small":  # "WxH below min_side N": remember the largest such image
            m = re.search(r"(\d+)x(\d+) below min_side", detail)
            if m:
                self.largest_too_small = max(self.largest_too_small,
                                             min(int(m.group(1)), int(m.group(2))))
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._synced >= SYNC_EVERY_S:
            self._man.sync()
            self._rej.sync()
            self._synced = now
        self.bar.update(1)
        c = self.counts
        self.bar.set_postfix(listed=c["listed"], downloaded=c["downloaded"],
                             skipped=c["skipped"] + c["skipped_existing"], failed=c["failed"],
                             rejected=c["rejected"], refresh=False)

    def records(self) -> list[dict]:
        return [self._records[i] for i in self._order if i in self._records]

    def finish(self, extra_keep: Iterable[str] = ()) -> dict:
        """Rewrite manifest and rejects in source order, drop unreferenced files, return counts."""
        self.bar.close()
        self._man.close()
        self._rej.close()
        records = self.records()
        manifest.write(self.out / "manifest.jsonl", records)
        manifest.write(self.out / "rejects.jsonl",
                       [self._rejects[i] for i in self._order if i in self._rejects])
        keep = {r["file"] for r in records} | set(extra_keep)
        for f in sorted(self.images_dir.iterdir()):
            rel = f"images/{f.name}"
            if f.is_file() and rel not in keep:
                f.unlink()
        if self.source != "synthetic":  # ground truth of an earlier synthetic run is stale
            shutil.rmtree(self.out / "truth", ignore_errors=True)
            (self.out / "truth.jsonl").unlink(missing_ok=True)
        self.counts["images"] = len(records)
        counts = dict(self.counts)
        counts["reasons"] = dict(sorted(self.reasons.items()))
        if self.largest_too_small:
            counts["largest_too_small"] = self.largest_too_small
        return counts

    def close(self) -> None:
        """Close files without rewriting (the run failed; the appended lines stay for resume)."""
        self.bar.close()
        self._man.close()
        self._rej.close()


def remove_temp_files(out: Path) -> int:
    """Delete temporary files a killed run left (downloads in progress, atomic writes)."""
    n = 0
    for sub in ("images", "truth", "."):
        d = out / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            if f.name.startswith(".") and f.suffix in TEMP_SUFFIXES and f.is_file():
                f.unlink()
                n += 1
    return n


def write_attribution(out: Path, records: list[dict]) -> None:
    """ATTRIBUTION.csv for the Flickr records (removed when there are none)."""
    path = out / "ATTRIBUTION.csv"
    rows = [r for r in records if r.get("source") == "flickr"]
    if not rows:
        if path.exists():
            path.unlink()
        return
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "photo_id", "title", "owner", "owner_name", "license", "license_name",
                "license_url", "photo_page"])
    for r in rows:
        pv = r["provenance"]
        w.writerow([r["id"], pv["photo_id"], pv.get("title", ""), pv["owner"],
                    pv.get("owner_name", ""), pv["license"], pv["license_name"],
                    pv["license_url"], pv["page_url"]])
    atomic.write_text(path, buf.getvalue())
