"""Reader for the human review decisions file, `data/review/decisions.jsonl`.

The file is append-only JSONL; each record is `{"kind": ..., "id": ..., "decision": ...}` and the
latest record per (kind, id) wins, so a reviewer can change their mind by appending. A missing
file means no decisions.
"""

from __future__ import annotations

from pathlib import Path

from spidergan import manifest

DEFAULT_PATH = "data/review/decisions.jsonl"


def latest(path: str | Path | None = DEFAULT_PATH, kind: str | None = None) -> dict[tuple[str, str], dict]:
    """Latest decision record per (kind, id), optionally only of one kind."""
    out: dict[tuple[str, str], dict] = {}
    if path is None:
        return out
    for r in manifest.iter_records(path):
        if "id" not in r or "decision" not in r:
            continue
        if kind is not None and r.get("kind") != kind:
            continue
        out[(str(r.get("kind")), str(r["id"]))] = r
    return out


def rejected(path: str | Path | None, kind: str) -> set[str]:
    """Ids of `kind` whose latest decision is "reject"."""
    return {i for (_, i), r in latest(path, kind).items() if r.get("decision") == "reject"}
