"""End to end: a tiny sweep through DVC's own queue (2 aug_prob values x 2 train seeds), its
worker killed with SIGKILL mid-sweep, `spidergan requeue` + `dvc queue start` finishing it (the
killed experiment's trainer resuming from the checkpoint its copy left), then `spidergan compare`.

The upstream stages run once (`dvc repro`, lock committed); the queued experiments only re-run
train and evaluate (tiny detector and crops from ground truth, as in test_pipeline.py).
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, venv_env
from test_pipeline import TINY, _merge, _run, _tracked_files

SWEEP = ["-S", "train.augment=fixed", "-S", "train.aug_prob=0.2,0.8", "-S", "train.seed=1,2"]


def _dvc(args, dst, e, **kw):
    return _run([str(Path(sys.executable).parent / "dvc"), *args], dst, e, **kw)


def _spidergan(args, dst, e):
    return _run([sys.executable, "-m", "spidergan.cli", *args], dst, e)


def _worker_pgids(dst: Path) -> set[int]:
    """Process groups of this repo's queue workers (other projects' workers are left alone)."""
    out = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "queue-worker" in cmd and Path(os.readlink(proc / "cwd")) == dst:
                out.add(os.getpgid(int(proc.name)))
        except (OSError, ProcessLookupError):
            continue
    out.discard(os.getpgid(0))  # never this test's own group (DVC daemonizes its workers)
    return out


def _queue_start(dst, e):
    """`dvc queue start`: its daemonized worker inherits the output pipes, so a captured run
    would wait for the whole queue; the worker gets /dev/null instead."""
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "queue", "start", "-j", "1"],
                   cwd=dst, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=120)


def _status(dst, e) -> list[tuple[str, str]]:
    rows = _dvc(["queue", "status"], dst, e).stdout.splitlines()
    states = ("Queued", "Running", "Success", "Failed")
    return [(r.split()[1], r.split()[-1]) for r in rows[1:]
            if len(r.split()) >= 4 and r.split()[-1] in states]


def _wait_done(dst, e, timeout=900):
    end = time.time() + timeout
    while time.time() < end:
        st = _status(dst, e)
        if st and not any(s in ("Queued", "Running") for _, s in st):
            return st
        time.sleep(2)
    raise AssertionError(f"queue not done after {timeout} s: {_status(dst, e)}")


@pytest.fixture
def dst(tmp_path):
    """The repo folder; any queue worker still running there at the end is stopped."""
    dst = tmp_path / "repo"
    yield dst
    for pg in _worker_pgids(dst):
        os.killpg(pg, signal.SIGKILL)


@pytest.mark.slow
def test_queued_sweep_survives_kill_and_compares(dst, netguard_log):
    for rel in _tracked_files(ROOT):
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).write_bytes((ROOT / rel).read_bytes())
    tiny = _merge(json.loads(json.dumps(TINY)), {"train": {"keep_snapshots": True},
                                                  "evaluate": {"snapshots": True}})
    params = _merge(yaml.safe_load((dst / "params.yaml").read_text()), tiny)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    e = venv_env({"SPIDERGAN_ROOT": str(dst), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                  "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}, pythonpath=dst)
    _run(["git", "init", "-q", "-b", "main"], dst, e)
    _run(["git", "add", "-A"], dst, e)
    _run(["git", "commit", "-qm", "init"], dst, e)  # dvclive wants a commit to start from
    _dvc(["repro"], dst, e)  # upstream stages once; the sweep reuses them through the lock
    _run(["git", "add", "-A"], dst, e)
    _run(["git", "commit", "-qm", "baseline"], dst, e)

    _dvc(["exp", "run", "--queue", *SWEEP], dst, e)
    assert [s for _, s in _status(dst, e)] == ["Queued"] * 4
    _queue_start(dst, e)
    # SIGKILL the worker once the first experiment's trainer is past its first snapshot (its
    # progress bar in DVC's log of the task), as a power cut would
    exps = dst / ".dvc/tmp/exps"
    past = re.compile(r"0\.(0[89]|1\d)/0\.10 kimg")
    end, killed = time.time() + 600, False
    while time.time() < end and not killed:
        for log in exps.glob("run/*/*.out"):
            if past.search(log.read_text(errors="replace")):
                for pg in _worker_pgids(dst):
                    os.killpg(pg, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.3)
    assert killed, "the first experiment never got past its first snapshot"
    time.sleep(1)
    st = dict(_status(dst, e))
    assert "Running" in st.values() and "Success" not in st.values(), st  # DVC's stale entry

    out = _spidergan(["requeue"], dst, e).stdout
    assert "queued" in out and "-S train.seed=" in out, out
    _queue_start(dst, e)
    st = _wait_done(dst, e)
    assert [s for _, s in st] == ["Success"] * 4, st
    logs = "".join(f.read_text(errors="replace") for f in exps.glob("run/*/*.out"))
    assert "left by a killed experiment" in logs  # the re-run took the killed copy's checkpoint

    _spidergan(["compare", "--out", "reports/compare", "--plots", "plots/compare"], dst, e)
    rows = list(csv.DictReader((dst / "reports/compare/points.csv").open()))
    assert [r["train.aug_prob"] for r in rows] == ["0.2", "0.8"]
    assert [r["n"] for r in rows] == ["2", "2"] and sum(int(r["best"]) for r in rows) == 1
    runs = list(csv.DictReader((dst / "reports/compare/runs.csv").open()))
    assert sorted((r["train.aug_prob"], r["train.seed"]) for r in runs) == [
        ("0.2", "1"), ("0.2", "2"), ("0.8", "1"), ("0.8", "2")]
    assert len({r["swd"] for r in runs}) == 4  # every seed trained its own generator
    html = (dst / "reports/compare/index.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "//cdn" not in html  # + curves
    assert "train.aug_prob 0.2 -&gt; 0.8: swd" in html
    assert "train.aug_prob 0.2 -> 0.8: swd" in (dst / "reports/compare/table.md").read_text()
    assert (dst / "plots/compare/compare.png").stat().st_size > 0
    assert netguard_log.read_text() == "" if netguard_log.exists() else True
