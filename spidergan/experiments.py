"""What DVC recorded of each experiment: `dvc exp show --json` read into runs (flat params, the
numbers of metrics/evaluate.json), and each run's snapshot curve from its own git commit.
compare.py turns them into the comparison report."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from pathlib import Path
from typing import Callable, Sequence

METRICS_FILE = "metrics/evaluate.json"
SNAPSHOTS_FILE = "plots/evaluate/snapshots.json"
PARAMS_FILE = "params.yaml"


class ExperimentsError(RuntimeError):
    """DVC could not list the experiments; the message carries its error."""


@dataclasses.dataclass
class Run:
    name: str
    rev: str
    params: dict            # flat, dotted keys
    metrics: dict           # flat, numbers only
    curve: list = dataclasses.field(default_factory=list)  # snapshots.json rows


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _numbers(d: dict) -> dict:
    return {k: float(v) for k, v in flatten(d).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def runs_from_show(show: list, include_baseline: bool = False) -> tuple[list[Run], list[tuple[str, str]]]:
    """Experiments with metrics from `dvc exp show --json`, and (name, reason) for those left out
    (queued, running, failed, no metrics)."""
    runs, skipped = [], []
    for base in show or []:
        if base.get("rev") == "workspace":
            continue
        entries = []
        if include_baseline:
            entries.append((base.get("name") or base.get("rev", "")[:7], base, "success"))
        for exp in base.get("experiments") or []:
            state = ((exp.get("executor") or {}).get("state")) or "success"
            for r in exp.get("revs") or []:
                entries.append((exp.get("name") or r.get("name") or r.get("rev", "")[:7], r, state))
        for name, r, state in entries:
            data = r.get("data") or {}
            if state != "success":
                skipped.append((name, state))
                continue
            if r.get("error"):
                skipped.append((name, f"error: {r['error']}"))
                continue
            m = ((data.get("metrics") or {}).get(METRICS_FILE) or {}).get("data")
            if not m:
                skipped.append((name, f"no {METRICS_FILE}"))
                continue
            p = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}
            metrics = _numbers(m)
            if "kimg" in metrics and metrics.get("num_train"):
                metrics["views_per_image"] = metrics["kimg"] * 1000 / metrics["num_train"]
            runs.append(Run(name=name, rev=r.get("rev", ""), params=flatten(p), metrics=metrics))
    return runs, skipped


def git_reader(root: str | Path) -> Callable[[str, str], str | None]:
    """read(rev, path): the file's text at that git revision under `root`, None if absent."""
    def read(rev: str, path: str) -> str | None:
        r = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None
    return read


def attach_curves(runs: Sequence[Run], read: Callable[[str, str], str | None]) -> None:
    for run in runs:
        text = read(run.rev, SNAPSHOTS_FILE) if run.rev else None
        try:
            rows = json.loads(text) if text else []
        except json.JSONDecodeError:
            rows = []
        run.curve = [_numbers(r) for r in rows if isinstance(r, dict) and "kimg" in r]


def dvc_exp_show(root: str | Path) -> list:
    r = subprocess.run(["dvc", "exp", "show", "--json"], cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise ExperimentsError(f"`dvc exp show --json` failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout or "[]")
