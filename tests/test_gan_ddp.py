"""Multi-process training on CPU: two gloo processes under torchrun against one process.

The two-rank run must make the same first update as one process with the whole batch: the
gradients are averaged over the ranks, the latents and path-length directions come from one
batch-wide stream, the path-length mean and the ADA statistic are reduced across ranks, and
rank r takes samples r, r + 2, ... so the minibatch-std groups are the same (group size 4 =
the per-rank batch). G's noise inputs (each rank's own random stream) are switched off.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spidergan.gan import checkpoint as ckpt_mod
from spidergan.gan import train
from spidergan.gan.loss import StyleGAN2Loss
from gan_helpers import make_dataset, tiny

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"

PARAMS = dict(resolution=16, batch=8, kimg=0.008, snap_kimg=0.008, channel_base=128,
              channel_max=16, z_dim=8, w_dim=8, mapping_layers=2, mbstd_group=4, grid=2,
              threads=1, style_mixing=0.0, augment="ada", aug_prob=0.0, ada_interval=1,
              ada_kimg=0.5, ada_target=0.1, r1_interval=4, pl_interval=2, pl_batch_shrink=2, mirror=True,
              device="cpu")

# D's verdict (sign of its logit) on each real of the global batch of 8, for the ADA statistic
SIGNS = [1, 1, -1, 1, -1, 1, -1, 1]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ddp"), resolution=16, n=24)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(ds: Path, out: Path, nproc: int, **over) -> dict:
    cfg = {"params": {**PARAMS, **over}, "seed": 3, "dataset": str(ds), "out": str(out),
           "no_noise": True, "ada_signs": SIGNS}
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", SPIDERGAN_NETGUARD="1",
               GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, str(WORKER), json.dumps(cfg)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(WORKER), json.dumps(cfg)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return ckpt_mod.load(out / train.CHECKPOINT_NAME)


def _assert_same(a: dict, b: dict, tol: float = 1e-5) -> int:
    n = 0
    for net in ("G", "D", "G_ema"):
        for k, va in a[net].items():
            if k.endswith("w_avg"):  # running mean of w over the batch each rank saw
                continue
            torch.testing.assert_close(va, b[net][k], atol=tol, rtol=0, msg=f"{net}.{k}")
            n += 1
    return n


def test_two_ranks_make_the_same_first_step_as_one_process_and_resume_on_one(ds, tmp_path):
    one = _train(ds, tmp_path / "one", 1)
    two = _train(ds, tmp_path / "two", 2)
    assert one["step"] == two["step"] == 1 and one["nimg"] == two["nimg"] == 8
    assert _assert_same(one, two) > 20
    torch.testing.assert_close(one["pl_mean"], two["pl_mean"], atol=1e-6, rtol=0)
    # ADA: r_t is taken over the whole batch (reduced across ranks). D's signs are set so that
    # rank 0 alone (-0.5) would lower p while the whole batch (0.25) raises it past 0
    assert one["history"]["ada_rt"] == two["history"]["ada_rt"] == pytest.approx(0.25)
    assert float(one["augment_p"]) == pytest.approx(float(two["augment_p"]))
    assert float(two["augment_p"]) > 0

    # the 2-rank checkpoint continues in one process: counters, optimiser moments and p carry on
    # (not bit-identical to the 1-process continuation: rank 0's augmentation stream differs)
    shutil.copytree(tmp_path / "two", tmp_path / "two_then_one")
    a = _train(ds, tmp_path / "two_then_one", 1, kimg=0.016)
    assert a["step"] == 2 and a["nimg"] == 16 and a["history"]["ada_rt"] == pytest.approx(0.25)
    # G: main + path length at step 0, main at step 1; D: main + R1, then main
    assert float(a["opt_G"]["state"][0]["step"]) == float(a["opt_D"]["state"][0]["step"]) == 3
    assert float(a["augment_p"]) == pytest.approx(2 * float(two["augment_p"]))
    for net in ("G", "D"):
        assert all(torch.isfinite(v).all() for v in a[net].values())
    assert not torch.equal(a["G"]["synthesis.b4.conv1.weight"], two["G"]["synthesis.b4.conv1.weight"])


def test_batch_must_split_over_ranks(ds, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="batch=8 cannot be split over 3 processes"):
        train.run(tiny(batch=8), 0, dataset=ds, out=tmp_path / "o", live_dir=None,
                  metrics_path=None, progress=False)


def test_nan_loss_stops_naming_step_and_last_checkpoint(ds, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_d_main = StyleGAN2Loss.d_main

    def poisoned(self, z, real):
        loss, rl, fl = real_d_main(self, z, real)
        calls["n"] += 1
        return (loss * math.nan if calls["n"] == 6 else loss), rl, fl

    monkeypatch.setattr(StyleGAN2Loss, "d_main", poisoned)
    out = tmp_path / "o"
    # batch 4, snapshot every 4 steps, a log tick every step; D's 6th loss (step 5) is NaN
    with pytest.raises(train.NonFiniteLoss) as e:
        train.run(tiny(kimg=0.064), 0, dataset=ds, out=out, live_dir=None, metrics_path=None,
                  progress=False)
    msg = str(e.value)
    assert "non-finite loss (D" in msg and "at step 5 " in msg
    assert f"{out / train.CHECKPOINT_NAME} (kimg 0.016, step 4)" in msg
    state = ckpt_mod.load(out / train.CHECKPOINT_NAME)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["G"].values())
