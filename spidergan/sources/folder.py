"""Folder source: import a user's images (jpg, png, webp, tiff) recursively into `data/raw/`.

Files are visited in sorted path order; the id is derived from the path relative to the folder,
so it is stable across runs and machines. Every image goes through the shared ingest path
(full decode, EXIF orientation applied, RGB, minimum size); other files are listed in
rejects.jsonl as skipped. A file unchanged since the last run (same path, size, mtime) is
not read again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from spidergan import images
from spidergan.ingest import Ingest, ScrapeError, sha256, write_attribution
from spidergan.params import ScrapeParams

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")


class FolderError(ScrapeError):
    pass


def item_id(rel: str) -> str:
    return "folder-" + hashlib.sha256(rel.encode("utf-8")).hexdigest()[:16]


def walk(root: Path) -> list[tuple[str, Path]]:
    """(posix path relative to root, path) of every file under root, sorted by that relative
    path; symbolic links to folders are not followed (no cycles)."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def run(p: ScrapeParams, out: Path) -> dict:
    root = Path(p.folder.path).expanduser()
    if not root.is_dir():
        raise FolderError(f"scrape.folder.path {str(root)!r} is not a folder")
    root = root.resolve()
    out_resolved = Path(out).resolve()
    files = walk(root)
    ing = Ingest(out, p, "folder", desc=f"scrape folder {root.name}")
    ing.bar.total = len(files)
    try:
        for rel, path in files:
            if out_resolved in path.resolve().parents:
                continue  # importing data/raw into itself would loop forever
            iid = item_id(rel)
            if not ing.listed(iid):
                continue
            if path.suffix.lower() not in SUFFIXES:
                ing.reject(iid, "unsupported_type",
                           f"{rel}: not one of {', '.join(SUFFIXES)}", kind="skipped")
                continue
            try:
                st = path.stat()
            except OSError as e:
                ing.reject(iid, "unreadable", f"{rel}: {e}", kind="failed")
                continue
            key = f"{rel}|{st.st_size}|{st.st_mtime_ns}"
            prov = {"path": rel, "folder": str(root), "bytes": st.st_size, "key": key}
            prev = ing.reusable(iid, "key", key)
            if prev is not None:
                ing.accept(iid, None, prov, reused=True, record=prev)
                continue
            bad = ing.previous_reject(iid, key)
            if bad is not None:
                ing.reject(iid, bad["reason"], bad.get("detail", ""), key=key)
                continue
            try:
                data = path.read_bytes()
            except OSError as e:
                ing.reject(iid, "unreadable", f"{rel}: {e}", kind="failed")
                continue
            try:
                stored = ing.store(iid, data)
            except images.ImageRejected as e:
                ing.reject(iid, e.reason, f"{rel}: {e.detail}", key=key)
                continue
            prov["source_sha256"] = sha256(data)
            ing.accept(iid, stored, prov)
    except BaseException:
        ing.close()
        raise
    counts = ing.finish()
    write_attribution(out, ing.records())
    return counts
