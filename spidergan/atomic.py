"""Atomic file output: write to a temporary file beside the target, fsync, then rename.

A killed run therefore leaves either the old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def adopt(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file (a download written beside `path`) onto `path`, after
    fsync, like `atomic_path` does with its own."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def copy_file(src: str | Path, path: str | Path, link: bool = False) -> None:
    """`src` copied to `path`; with `link`, hard-linked where the file system allows (no copy)."""
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        if link:
            tmp.unlink()
            try:
                os.link(src, tmp)
                return
            except OSError:  # another file system, or links not allowed
                pass
        shutil.copyfile(src, tmp)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """JSON with sorted keys and a trailing newline (DVC metrics files, reports)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def write_metrics(path: str | Path, obj: dict) -> None:
    """A DVC metrics file: the numbers of `obj` only (nested sections kept), so `dvc metrics
    show` stays a table; words (warnings, names, digests) belong in logs and reports."""
    def numbers(d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out[k] = numbers(v)
            elif isinstance(v, (int, float)):
                out[k] = v
        return out
    write_json(path, numbers(obj))


def save_image(path: str | Path, image, **save_kwargs) -> None:
    """Save a PIL image atomically; the format follows the target's suffix."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
           ".gif": "GIF"}.get(path.suffix.lower())
    with atomic_path(path, suffix=path.suffix) as tmp:
        image.save(tmp, format=fmt, **save_kwargs)


def _default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
