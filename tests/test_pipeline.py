"""End to end: the repository copied into a temporary git repo, run with real `dvc` commands.

The committed params are shrunk (TINY) so the whole DAG runs in a few minutes; every stage
runs for real, under the network guard.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, venv_env

# Overrides that keep every stage real but small.
TINY = {
    "scrape": {"synthetic": {"count": 24}},
    # A detector trained 1 epoch at 64 px finds no spider to crop: here the crops come from the
    # synthetic ground truth (the detector still trains, predicts and scores the fakes).
    "crop": {"boxes": "truth"},
    "detect": {"epochs": 1, "imgsz": 64, "labeled": 10, "min_labels": 2, "close_mosaic": 0,
               "selftrain": {"rounds": 0}},
    "dataset": {"holdout": 4},
    "train": {"kimg": 0.1, "snap_kimg": 0.05},
    "evaluate": {"num_fakes": 16, "kid_subsets": 10, "batch": 16, "grid": 4, "pairs": 8,
                 "detector_imgsz": 128},
}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def _tracked_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                         capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f]


def _run(cmd, cwd, env, check=True, timeout=1800):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


@pytest.fixture
def repo(tmp_path, netguard_log):
    """A fresh clone-like copy of the project with tiny params, committed."""
    dst = tmp_path / "repo"
    for rel in _tracked_files(ROOT):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    (dst / "params.yaml").write_text(yaml.safe_dump(_merge(params, TINY), sort_keys=False))
    e = venv_env({"SPIDERGAN_ROOT": str(dst), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                  "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}, pythonpath=dst)
    _run(["git", "init", "-q", "-b", "main"], dst, e)
    _run(["git", "add", "-A"], dst, e)
    _run(["git", "commit", "-qm", "init"], dst, e)
    return dst, e


def _dvc(args, repo_env, **kw):
    dst, e = repo_env
    return _run([str(Path(sys.executable).parent / "dvc"), *args], dst, e, **kw)


# Keys metrics/evaluate.json always has; the Inception ones need weights a fresh clone lacks.
EVAL_KEYS = ("swd", "memorization_rate", "copy_ratio", "authenticity",
             "num_fakes", "num_train", "num_holdout", "kimg")
INCEPTION_KEYS = ("fid", "kid_mean", "kid_std", "mifid", "precision", "recall")


def _exp_metrics(show: list) -> dict:
    """{experiment name: metrics/evaluate.json} from `dvc exp show --json`."""
    out = {}
    for rev in show:
        for exp in rev.get("experiments") or []:
            for r in exp.get("revs") or []:
                data = r.get("data") or {}
                m = (data.get("metrics") or {}).get("metrics/evaluate.json", {}).get("data")
                if m is not None:
                    out[exp.get("name") or r.get("name") or r.get("rev")] = m
    return out


@pytest.mark.slow
def test_repro_and_experiment_loop(repo, netguard_log):
    """The user's loop: repro, no-op repro, a typo refused, experiments, exp show, metrics diff,
    plots diff."""
    dst, e = repo
    stages = yaml.safe_load((dst / "dvc.yaml").read_text())["stages"]
    _dvc(["repro"], repo)

    raw = [json.loads(x) for x in (dst / "data/raw/manifest.jsonl").read_text().splitlines()]
    n = TINY["scrape"]["synthetic"]["count"]
    assert len(raw) == n
    for r in raw:
        assert (dst / "data/raw" / r["file"]).is_file()
        assert r["source"] == "synthetic" and r["width"] >= 256 and len(r["sha256"]) == 64
    truth = [json.loads(x) for x in (dst / "data/raw/truth.jsonl").read_text().splitlines()]
    assert {t["id"] for t in truth} == {r["id"] for r in raw}
    assert json.loads((dst / "metrics/scrape.json").read_text())["images"] == n
    for stage in stages:  # every stage ran and left its lock entry
        assert stage in yaml.safe_load((dst / "dvc.lock").read_text())["stages"], stage

    # nothing changed: nothing re-runs
    again = _dvc(["repro"], repo)
    assert "didn't change" in again.stdout or "up to date" in again.stdout.lower(), again.stdout

    # a typo in -S must stop the run, naming the key, never run on the default
    bad = _dvc(["exp", "run", "-S", "train.aug_pob=0.5"], repo, check=False)
    assert bad.returncode != 0
    assert "train.aug_pob" in bad.stdout + bad.stderr
    _run(["git", "checkout", "--", "params.yaml"], dst, e)
    base = json.loads((dst / "metrics/evaluate.json").read_text())
    for k in EVAL_KEYS:
        assert k in base, k
    # the clone has no Inception weights and the network guard forbids fetching them
    notes = json.loads((dst / "reports/evaluate_notes.json").read_text())
    assert "weights-inception-2015-12-05-6726825d.pth" in notes["fid_warning"]
    assert not any(k in base for k in INCEPTION_KEYS)
    # every metrics file holds numbers only: `dvc metrics show` stays a table
    def numbers_only(d):
        return all(numbers_only(v) if isinstance(v, dict) else isinstance(v, (int, float))
                   for v in d.values())
    for f in sorted((dst / "metrics").glob("*.json")):
        assert numbers_only(json.loads(f.read_text())), f.name
    if any("models/detector.pt" in str(o) for s in stages.values() for o in s.get("outs", [])):
        assert 0 <= base["detector_rate"] <= 1 and 0 <= base["detector_rate_real"] <= 1
    else:  # no detector stage in this DAG: evaluate says so instead of crashing
        assert "models/detector.pt" in notes["detector_rate_warning"]
    html = (dst / "reports/evaluate.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "//cdn" not in html
    pairs = [json.loads(x) for x in (dst / "data/eval/pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == base["num_fakes"] and (dst / pairs[0]["fake"]).is_file()

    _dvc(["exp", "run", "-n", "aug", "-S", "train.aug_prob=0.5"], repo)
    size = max(2, base["num_train"] // 2)
    _dvc(["exp", "run", "-n", "small", "-S", f"dataset.size={size}"], repo)
    _dvc(["exp", "run", "-n", "more", "-S", f"scrape.synthetic.count={n + 6}"], repo)
    assert len((dst / "data/raw/manifest.jsonl").read_text().splitlines()) == n + 6
    exps = _exp_metrics(json.loads(_dvc(["exp", "show", "--json"], repo).stdout))
    assert {"aug", "small", "more"} <= set(exps), exps.keys()
    for name in ("aug", "small"):
        for k in EVAL_KEYS:
            assert k in exps[name], (name, k)
    assert exps["aug"]["swd"] != base["swd"]
    assert exps["small"]["num_train"] == size != base["num_train"]

    diff = json.loads(_dvc(["metrics", "diff", "--json"], repo).stdout)
    changed = diff.get("metrics/evaluate.json", {})
    assert "swd" in changed and "num_train" in changed, changed
    _dvc(["plots", "diff", "-o", "plots_html"], repo)
    page = (dst / "plots_html" / "index.html").read_text()
    assert "pairs.png" in page and "samples.png" in page
    assert netguard_log.read_text() == "" if netguard_log.exists() else True
