"""Test set-up: the offline environment, and a guard that fails any non-loopback connection."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPIDERGAN_ROOT", str(ROOT))
os.environ["SPIDERGAN_NETGUARD"] = "1"  # inherited by every subprocess (dvc stages included)

from spidergan import env  # noqa: E402

env.setup(ROOT)


@pytest.fixture
def netguard_log(tmp_path, monkeypatch):
    """A file where guarded processes (this one and its children) record refused connections."""
    log = tmp_path / "netguard.log"
    monkeypatch.setenv("SPIDERGAN_NETGUARD_LOG", str(log))
    return log


def venv_env(extra: dict | None = None, pythonpath: Path | None = None) -> dict:
    """Environment for subprocesses: this interpreter's bin first on PATH."""
    e = dict(os.environ)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    if pythonpath is not None:
        e["PYTHONPATH"] = str(pythonpath)
    e.update(extra or {})
    return e
