"""Sweeps through DVC's queue, and what a killed queue needs to carry on.

DVC runs each queued experiment in its own temporary copy of the project
(`.dvc/tmp/exps/tmpXXXX`). When its worker is killed (power cut, `kill -9`, a closed session),
DVC 3.67 leaves that copy behind, with the trainer's last checkpoint in `models/gan/`, and lists
the experiment as `Running` until `dvc queue kill <name>` marks it `Failed`; it never runs it
again by itself (measured, README "Sweeps"). Two pieces make the sweep carry on:

* `requeue(root)`: marks dead `Running` experiments failed, queues every failed experiment
  again with the same params (its `-S` overrides against the baseline) and removes the failed
  entry. `dvc queue start` then runs them, and the queued ones that never started.
* `adopt_checkpoint(...)`, called by the train stage: in a queued experiment's copy, when
  `models/gan` holds no checkpoint of this run, take the newest checkpoint of the same run (same
  train params, seed and dataset, by the trainer's own resume rule) that a killed copy left
  beside it, so the trainer resumes from there instead of starting afresh.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from spidergan import atomic
from spidergan.params import TrainParams, to_dict

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def _exps_dir(workdir: Path) -> Path | None:
    """`.dvc/tmp/exps` when `workdir` is one of DVC's temporary experiment copies, else None."""
    workdir = workdir.resolve()
    parent = workdir.parent
    if parent.name == "exps" and parent.parent.name == "tmp" and parent.parent.parent.name == ".dvc":
        return parent
    return None


def adopt_checkpoint(p: TrainParams, seed: int, dataset: str | Path, out: str | Path,
                     workdir: str | Path = ".", exps_dir: str | Path | None = None) -> Path | None:
    """Copy a killed sibling experiment's checkpoint of this very run into `out`; return its
    old path, or None when there is nothing to adopt (not in a DVC copy, or no match)."""
    from spidergan.gan import checkpoint as ckpt_mod
    from spidergan.gan.dataset import ImageDataset

    workdir = Path(workdir).resolve()
    exps = Path(exps_dir) if exps_dir is not None else _exps_dir(workdir)
    if exps is None or not exps.is_dir():
        return None
    out = Path(out)
    rec = to_dict(p)
    sha = ImageDataset(dataset).fingerprint()

    def same_run(state) -> bool:
        try:
            ckpt_mod.check_resume(state, rec, seed, sha)
            return True
        except ckpt_mod.ResumeMismatch:
            return False

    own = out / CHECKPOINT
    if own.exists():
        try:
            if same_run(ckpt_mod.load(own)):
                return None  # the trainer resumes from it anyway
        except (ValueError, RuntimeError, OSError):
            pass
    best, best_nimg = None, -1
    for cand in sorted(exps.glob(f"*/{out.as_posix()}/{CHECKPOINT}")):
        if cand.resolve().is_relative_to(workdir):
            continue
        try:
            state = ckpt_mod.load(cand)
        except (ValueError, RuntimeError, OSError) as e:
            log.warning("sweep: skipping %s: %s", cand, e)
            continue
        if same_run(state) and int(state.get("nimg", 0)) > best_nimg:
            best, best_nimg = cand, int(state.get("nimg", 0))
    if best is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    if own.exists():  # another run's checkpoint (the baseline's): aside, as the trainer does
        os.replace(own, out / "checkpoint-previous.pt")
    snaps = best.parent / "snapshots"
    for f in sorted(snaps.glob("*.pt")) if snaps.is_dir() else []:
        with atomic.atomic_path(out / "snapshots" / f.name, suffix=".pt") as tmp:
            shutil.copyfile(f, tmp)
    with atomic.atomic_path(own, suffix=".pt") as tmp:
        shutil.copyfile(best, tmp)
    # adopted once: the killed copy gives it up, so a second re-run cannot take it again
    os.replace(best, best.with_name("checkpoint-adopted.pt"))
    print(f"train: resuming from {best} ({best_nimg / 1000:g} kimg), left by a killed experiment")
    return best


# --------------------------------------------------------------------------- requeue
def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def overrides(baseline: dict, exp: dict) -> list[str]:
    """`key=value` for every param of `exp` that differs from `baseline` (both params.yaml
    mappings), values written as YAML reads them back (`dvc exp run -S` parses YAML)."""
    a, b = _flat(baseline), _flat(exp)
    out = []
    for k in sorted(b):
        if k not in a or a[k] != b[k]:
            v = yaml.safe_dump(b[k], default_flow_style=True, width=10_000).strip()
            out.append(f"{k}={v.removesuffix('...').strip()}")
    return out


def _alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dvc(args, root, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r


def requeue(root: str | Path = ".", dry_run: bool = False) -> list[tuple[str, list[str]]]:
    """Queue again, with the same params, every experiment of the current commit that failed
    or whose worker died; return [(name, overrides)]. Start the queue afterwards."""
    show = json.loads(_dvc(["exp", "show", "--json"], root).stdout or "[]")
    done = []
    for base in show:
        if base.get("rev") == "workspace":
            continue
        bparams = (((base.get("data") or {}).get("params") or {}).get("params.yaml") or {}).get("data") or {}
        for exp in base.get("experiments") or []:
            ex = exp.get("executor") or {}
            state, name = ex.get("state"), exp.get("name")
            dead = state == "running" and not _alive((ex.get("local") or {}).get("pid"))
            if state != "failed" and not dead:
                continue
            rev = (exp.get("revs") or [{}])[0]
            eparams = (((rev.get("data") or {}).get("params") or {}).get("params.yaml") or {}).get("data")
            if not eparams:
                log.warning("sweep: %s has no recorded params; queue it again by hand", name)
                continue
            ov = overrides(bparams, eparams)
            done.append((name, ov))
            if dry_run:
                continue
            if dead:  # DVC lists it as running until told otherwise
                _dvc(["queue", "kill", name], root, check=False)
            _dvc(["queue", "remove", name], root, check=False)
            args = ["exp", "run", "--queue"]
            for o in ov:
                args += ["-S", o]
            if _dvc([*args, "-n", name], root, check=False).returncode != 0:
                _dvc(args, root)  # the name is still taken: DVC picks one
    return done
