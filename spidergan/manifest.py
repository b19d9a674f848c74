"""JSONL manifests: one JSON object per line, keyed by a stable `id`.

Every stage reads the manifest of the stage before it and writes its own; it never lists a
folder to find its inputs. Two ways to write:

* `write(path, records)`: the whole manifest at once, atomically.
* `Appender(path)`: one record at a time, flushed and fsynced per line, for stages that must
  resume after a kill. A torn last line (the kill landed mid-write) is dropped on read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from spidergan import atomic


def _dumps(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=atomic._default)


def iter_records(path: str | Path) -> Iterator[dict]:
    """Records of a manifest in file order; a missing file yields nothing.

    A line that does not parse is only tolerated as the very last line (a write cut short by a
    kill); anywhere else it is corruption and raises.
    """
    path = Path(path)
    if not path.exists():
        return
    with open(path, "r", encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                return
            raise ValueError(f"{path}:{i + 1}: corrupt manifest line") from None


def read(path: str | Path) -> list[dict]:
    return list(iter_records(path))


def read_by_id(path: str | Path) -> dict[str, dict]:
    """Latest record per id (later lines win, as in append-only decision logs)."""
    return {r["id"]: r for r in iter_records(path)}


def write(path: str | Path, records: Iterable[dict]) -> int:
    """Write a whole manifest atomically. Returns the number of records."""
    n = 0
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(_dumps(r) + "\n")
                n += 1
    return n


class Appender:
    """Append records durably, one line each; usable as a context manager.

    On open, a torn trailing line left by a killed run is cut off so the file stays valid.
    """

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._f = open(self.path, "a", encoding="utf-8")
        self._fsync = fsync

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with open(self.path, "r+b") as f:
            f.truncate(cut)

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(_dumps(record) + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def sync(self) -> None:
        """fsync what was appended (for writers that open with fsync=False and batch)."""
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Appender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
