"""Training loop: resume equivalence, params mismatch, transfer learning with FreezeD, EMA ramp."""

from __future__ import annotations

import json
import math

import pytest
import torch

from spidergan.gan import build, checkpoint, train
from gan_helpers import make_dataset, replace, tiny


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("gan_ds"))


def _run(p, ds, out, **kw):
    return train.run(p, 0, dataset=ds, out=out, live_dir=out / "live", metrics_path=out / "m.json",
                     progress=False, **kw)


def _weights(out):
    return checkpoint.load(out / train.CHECKPOINT_NAME)


def _assert_same(a, b):
    for part in ("G", "D", "G_ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=1e-6, msg=f"{part}.{k}")
    torch.testing.assert_close(a["augment_p"], b["augment_p"], rtol=0, atol=1e-7)
    assert a["nimg"] == b["nimg"] and a["step"] == b["step"]


@pytest.mark.parametrize("augment", ["ada", "fixed"])
def test_resume_equals_straight_run(ds, tmp_path, augment):
    p = tiny(augment=augment, aug_prob=0.3)
    _run(p, ds, tmp_path / "straight")
    half = replace(p, kimg=0.016)
    _run(half, ds, tmp_path / "resumed")
    first = _weights(tmp_path / "resumed")
    assert first["nimg"] == 16
    res = _run(p, ds, tmp_path / "resumed")  # kimg may grow: continues from step 4
    assert res["steps"] == 8
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    _assert_same(a, b)
    if augment == "ada":
        assert float(a["augment_p"]) != 0.3  # ADA moved p, and the resumed run has the same p


def test_killed_run_resumes_from_last_snapshot(ds, tmp_path, monkeypatch):
    p = tiny(kimg=0.048)
    _run(p, ds, tmp_path / "straight")
    calls = {"n": 0}
    real_update = train.update_ema

    def dying_update(*a, **kw):  # "kill" the run in step 7, after the snapshot at step 4
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_update(*a, **kw)

    monkeypatch.setattr(train, "update_ema", dying_update)
    with pytest.raises(KeyboardInterrupt):
        _run(p, ds, tmp_path / "killed")
    assert _weights(tmp_path / "killed")["step"] == 4
    monkeypatch.setattr(train, "update_ema", real_update)
    _run(p, ds, tmp_path / "killed")
    _assert_same(_weights(tmp_path / "straight"), _weights(tmp_path / "killed"))


def test_params_mismatch_refuses_resume(ds, tmp_path):
    p = tiny(kimg=0.016)
    _run(p, ds, tmp_path / "run")
    with pytest.raises(checkpoint.ResumeMismatch) as e:
        _run(replace(p, kimg=0.032, r1_gamma=5.0, channel_max=8), ds, tmp_path / "run")
    msg = str(e.value)
    assert "r1_gamma" in msg and "channel_max" in msg and "kimg" not in msg.replace("ada_kimg", "")
    # settings that do not change the experiment may differ
    _run(replace(p, kimg=0.024, snap_kimg=0.008, grid=3), ds, tmp_path / "run")


def test_checkpoint_loads_weights_only_and_records_everything(ds, tmp_path):
    _run(tiny(kimg=0.016), ds, tmp_path / "run")
    state = torch.load(tmp_path / "run" / train.CHECKPOINT_NAME, weights_only=True)
    for k in ("G", "D", "G_ema", "opt_G", "opt_D", "augment_p", "ada", "nimg", "rng", "params"):
        assert k in state
    assert state["rng"]["cpu"].dtype == torch.uint8
    assert state["params"]["batch"] == 4
    metrics = json.loads((tmp_path / "run" / "m.json").read_text())
    assert metrics["monitor_swd_start"] > 0 and metrics["kimg"] == pytest.approx(0.016)
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # numbers only
    assert (tmp_path / "run" / "live" / "augment_preview.png").exists()
    samples = list((tmp_path / "run" / "live").rglob("kimg*.png"))
    assert len(samples) == 2  # kimg 0 and the final snapshot


def test_transfer_learning_with_freeze_d(ds, tmp_path):
    _run(tiny(kimg=0.016), ds, tmp_path / "base")
    src = tmp_path / "base" / train.CHECKPOINT_NAME
    p = tiny(kimg=0.016, resume_from=str(src), freeze_d=3)
    _run(p, ds, tmp_path / "tl")
    a, b = checkpoint.load(src), _weights(tmp_path / "tl")
    # layers 1-3 from the input side: b16.fromrgb, b16.conv0, b16.conv1 stay as they were
    for k in ("b16.fromrgb.weight", "b16.conv0.weight", "b16.conv1.weight", "b16.conv1.bias"):
        assert torch.equal(a["D"][k], b["D"][k]), k
    assert not torch.equal(a["D"]["b16.skip.weight"], b["D"]["b16.skip.weight"])
    assert not torch.equal(a["G"]["synthesis.b16.conv1.weight"], b["G"]["synthesis.b16.conv1.weight"])
    assert b["nimg"] == 16  # counted from the transfer, not continuing the source's kimg
    with pytest.raises(checkpoint.ResumeMismatch, match="channel_max"):
        _run(replace(p, channel_max=8), ds, tmp_path / "tl2")


def test_ema_ramp():
    # at the start the average follows G closely; later it has the full half-life
    assert train.ema_beta(0, 4, 10.0, 0.05) == 0.0
    early = train.ema_beta(1000, 32, 10.0, 0.05)  # ramp: half-life 50 images
    late = train.ema_beta(10**7, 32, 10.0, 0.05)  # half-life 10 kimg
    assert early == pytest.approx(0.5 ** (32 / 50))
    assert late == pytest.approx(0.5 ** (32 / 10000))
    assert train.ema_beta(10**7, 32, 10.0, 0.0) == late
    G = torch.nn.Linear(2, 2)
    E = torch.nn.Linear(2, 2)
    train.update_ema(E, G, 0, 4, 10.0, 0.05)
    assert torch.equal(E.weight, G.weight)


@pytest.mark.slow
def test_kill_9_then_rerun_resumes(ds, tmp_path):
    """A real SIGKILL of `spidergan train` after its first snapshot; the re-run continues."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from conftest import venv_env

    params = {"train": {k: v for k, v in vars(tiny(kimg=0.4, snap_kimg=0.016)).items()}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "spidergan.cli", "--params", str(tmp_path / "params.yaml"),
           "train", "--dataset", str(ds), "--out", str(tmp_path / "gan"), "--live",
           str(tmp_path / "live"), "--metrics", str(tmp_path / "m.json")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = venv_env(pythonpath=root)
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "gan" / train.CHECKPOINT_NAME
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), "no checkpoint within 2 minutes"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(ckpt)["nimg"]
    assert 0 < killed_at < 400
    params["train"]["kimg"] = killed_at / 1000 + 0.016  # just one more snapshot
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming {ckpt} at kimg {killed_at / 1000:.3f}" in out.stdout
    assert checkpoint.load(ckpt)["nimg"] == killed_at + 16


def test_every_train_param_is_checked_on_resume_or_free_to_change():
    import dataclasses

    from spidergan.params import TrainParams

    fields = {f.name for f in dataclasses.fields(TrainParams)}
    match, free = set(checkpoint.MATCH_KEYS), set(checkpoint.FREE_KEYS)
    assert not match & free, match & free
    assert match | free == fields, f"unclassified: {fields - match - free}"
    for k in ("precision", "compile", "tf32", "channels_last", "augment_filter"):
        assert k in match


def test_numerics_settings_refuse_resume(ds, tmp_path):
    p = tiny(kimg=0.008, snap_kimg=0.008)
    _run(p, ds, tmp_path / "run")
    with pytest.raises(checkpoint.ResumeMismatch, match="precision"):
        _run(replace(p, kimg=0.016, precision="bf16"), ds, tmp_path / "run")


def test_transfer_keeps_the_imported_g_ema(ds, tmp_path):
    # a source whose G and G_ema differ (EMA half-life 1 kimg over 16 images)
    _run(tiny(kimg=0.016, ema_kimg=1.0, ema_rampup=0.0), ds, tmp_path / "base")
    src = tmp_path / "base" / train.CHECKPOINT_NAME
    a = checkpoint.load(src)
    _run(tiny(kimg=0.004, snap_kimg=0.004, resume_from=str(src)), ds, tmp_path / "tl")
    b = _weights(tmp_path / "tl")
    assert b["step"] == 1

    def dist(x, y):  # over the parameters (buffers such as w_avg are copied from G, as in
        # the reference)
        return math.sqrt(sum(float((x[k] - y[k]).double().square().sum())
                             for k in x if not k.endswith("w_avg")))

    moved, spread = dist(b["G_ema"], a["G_ema"]), dist(b["G"], a["G_ema"])
    # one EMA step with half-life 1 kimg at batch 4: G_ema moves 0.28% of the way to G
    assert moved < 0.01 * spread, (moved, spread)
    assert build.ema_rampup(tiny(resume_from=str(src))) == 0.0
    assert build.ada_kimg(tiny(ada_kimg="auto", resume_from=str(src))) == 100
    assert build.ada_kimg(tiny(ada_kimg="auto")) == 500


@pytest.mark.parametrize("key, value, ok", [
    ("r1_gamma", "auto", True), ("r1_gamma", 0.5, True), ("r1_gamma", -1.0, False),
    ("r1_gamma", "autox", False), ("ada_kimg", "auto", True), ("ada_kimg", 0, False),
    ("augment_filter", "antialias", True), ("augment_filter", "bicubic", False),
])
def test_auto_params_validate_naming_the_key(key, value, ok):
    from spidergan import params

    if ok:
        assert getattr(params.from_dict({"train": {key: value}}).train, key) == value
    else:
        with pytest.raises(params.ParamsError, match=rf"^train\.{key}"):
            params.from_dict({"train": {key: value}})
