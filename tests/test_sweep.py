"""Sweeps: a killed queued experiment's checkpoint is adopted by its re-run (which then trains
exactly as an uninterrupted run), `-S` overrides rebuilt from recorded params, train.seed."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from spidergan import params, sweep
from spidergan.gan import checkpoint, train
from conftest import ROOT
from gan_helpers import make_dataset, replace, tiny


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("sweep_ds"))


def _copy(exps, name, ds):
    """A DVC temporary experiment copy: <exps>/<name>/data/dataset."""
    root = exps / name
    shutil.copytree(ds, root / "data" / "dataset")
    return root


def _train_in(p, root, ds):
    shutil.copytree(ds, root / "data" / "dataset")
    _train(p, root)
    return root


def _train(p, root, seed=0):
    return train.run(p, seed, dataset=root / "data/dataset", out=root / "models/gan",
                     live_dir=root / "plots/train", metrics_path=root / "m.json", progress=False)


def test_killed_copy_checkpoint_is_adopted_and_run_continues_exactly(ds, tmp_path, monkeypatch):
    p = tiny(augment="fixed", aug_prob=0.3)
    exps = tmp_path / ".dvc" / "tmp" / "exps"
    straight = _train_in(p, tmp_path / "straight", ds)  # the reference: never interrupted
    # the killed copy got halfway; another run (other seed) got as far but is not this run
    killed = _copy(exps, "tmpkilled", ds)
    _train(replace(p, kimg=0.016), killed)
    other = _copy(exps, "tmpother", ds)
    _train(replace(p, kimg=0.016), other, seed=1)
    rerun = _copy(exps, "tmprerun", ds)

    monkeypatch.chdir(rerun)
    got = sweep.adopt_checkpoint(p, 0, "data/dataset", "models/gan")
    assert got == killed / "models/gan/checkpoint.pt"
    assert not got.exists() and (killed / "models/gan/checkpoint-adopted.pt").exists()
    res = _train(p, rerun)
    assert res["steps"] == 8
    a, b = (checkpoint.load(r / "models/gan" / train.CHECKPOINT_NAME) for r in (straight, rerun))
    for part in ("G", "D", "G_ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=1e-6)
    assert a["nimg"] == b["nimg"]
    # adopted once: a second re-run finds nothing of this run left (DVC removes a finished
    # copy; the other seed's checkpoint does not count)
    shutil.rmtree(rerun)
    again = _copy(exps, "tmpagain", ds)
    monkeypatch.chdir(again)
    assert sweep.adopt_checkpoint(p, 0, "data/dataset", "models/gan") is None
    assert sweep.adopt_checkpoint(p, 1, "data/dataset", "models/gan") == other / "models/gan/checkpoint.pt"


def test_adopt_only_inside_a_dvc_copy_and_keeps_a_matching_own_checkpoint(ds, tmp_path, monkeypatch):
    p = tiny()
    plain = tmp_path / "project"
    shutil.copytree(ds, plain / "data" / "dataset")
    monkeypatch.chdir(plain)
    assert sweep.adopt_checkpoint(p, 0, "data/dataset", "models/gan") is None  # not .dvc/tmp/exps
    exps = tmp_path / ".dvc" / "tmp" / "exps"
    left = _copy(exps, "tmpleft", ds)
    _train(replace(p, kimg=0.016), left)
    own = _copy(exps, "tmpown", ds)
    _train(replace(p, kimg=0.016), own)
    monkeypatch.chdir(own)
    # its own checkpoint is this run's: the trainer resumes from it, nothing is taken
    assert sweep.adopt_checkpoint(p, 0, "data/dataset", "models/gan") is None
    assert (left / "models/gan/checkpoint.pt").exists()
    # another run's checkpoint in models/gan (the baseline's, as DVC checks it out): set aside
    _train(replace(p, lr_g=0.001, kimg=0.016, on_mismatch="restart"), own)
    assert checkpoint.load(own / "models/gan/checkpoint.pt")["params"]["lr_g"] == 0.001
    assert sweep.adopt_checkpoint(p, 0, "data/dataset", "models/gan") == left / "models/gan/checkpoint.pt"
    assert checkpoint.load(own / "models/gan/checkpoint-previous.pt")["params"]["lr_g"] == 0.001
    assert checkpoint.load(own / "models/gan/checkpoint.pt")["params"]["lr_g"] == p.lr_g


@pytest.mark.parametrize("base, exp, want", [
    ({"train": {"aug_prob": 0.0, "augment": "ada", "seed": None}, "seed": 0},
     {"train": {"aug_prob": 0.5, "augment": "fixed", "seed": 2}, "seed": 0},
     ["train.aug_prob=0.5", "train.augment=fixed", "train.seed=2"]),
    ({"mask": {"grabcut": {"shadow": [0.3, 0.6]}}, "d": {"s": "x"}},
     {"mask": {"grabcut": {"shadow": []}}, "d": {"s": ""}},
     ["d.s=''", "mask.grabcut.shadow=[]"]),
    ({"a": 1}, {"a": 1}, []),
])
def test_overrides_round_trip_through_yaml(base, exp, want):
    got = sweep.overrides(base, exp)
    assert got == want
    for o in got:  # dvc exp run -S parses the value as YAML: it must come back equal
        k, _, v = o.partition("=")
        node = exp
        for part in k.split("."):
            node = node[part]
        assert yaml.safe_load(v) == node


def test_train_seed_defaults_to_top_level_seed():
    p = params.from_dict({"seed": 7})
    assert p.train.seed is None and params.train_seed(p.train, p.seed) == 7
    q = params.override(p, ["train.seed=3"])
    assert params.train_seed(q.train, q.seed) == 3 and q.seed == 7  # the data's seed is untouched
    assert params.load(ROOT / "params.yaml").train.seed is None  # today's runs unchanged
    with pytest.raises(params.ParamsError, match="train.seed"):
        params.override(p, ["train.seed=-1"])
    with pytest.raises(params.ParamsError, match="train.seed"):
        params.override(p, ["train.seed=one"])
