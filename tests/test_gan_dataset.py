"""Dataset stage: seeded selection, holdout, size larger than available, rejects, loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gan_helpers import make_images

from spidergan import manifest
from spidergan.gan import dataset
from spidergan.params import DatasetParams


def test_dataset_packs_seeded_selection_with_holdout(tmp_path):
    man = make_images(tmp_path / "masked", n=12, size=40)
    (tmp_path / "masked" / "images" / "s011.png").write_bytes(b"not a png")
    inputs = {"masked": (man, tmp_path / "masked")}
    info = dataset.run(DatasetParams(size=6, holdout=2), 16, seed=3, inputs=inputs,
                       out=tmp_path / "ds", metrics_path=tmp_path / "m.json")
    assert info["train"] == 6 and info["holdout"] == 2 and not info["used_all"]
    arr = np.load(tmp_path / "ds" / "train.npy")
    assert arr.shape == (6, 16, 16, 3) and arr.dtype == np.uint8
    train = manifest.read(tmp_path / "ds" / "manifest.jsonl")
    hold = manifest.read(tmp_path / "ds" / "holdout" / "manifest.jsonl")
    assert [r["index"] for r in train] == list(range(6))
    assert not {r["id"] for r in train} & {r["id"] for r in hold}
    assert all((tmp_path / "ds" / r["file"]).exists() for r in hold)
    assert train[0]["provenance"]  # carried forward
    # same seed, same selection; another seed, another one
    again = dataset.run(DatasetParams(size=6, holdout=2), 16, seed=3, inputs=inputs,
                        out=tmp_path / "ds2", metrics_path=None)
    assert again["sha256"] == info["sha256"]
    other = dataset.run(DatasetParams(size=6, holdout=2), 16, seed=4, inputs=inputs,
                        out=tmp_path / "ds3", metrics_path=None)
    assert other["sha256"] != info["sha256"]
    assert json.loads((tmp_path / "m.json").read_text())["train"] == 6


def test_size_larger_than_available_uses_all_and_says_so(tmp_path, capsys):
    man = make_images(tmp_path / "masked", n=5, size=40)
    (tmp_path / "masked" / "images" / "s004.png").write_bytes(b"not a png")
    info = dataset.run(DatasetParams(size=100, holdout=1), 16, seed=0,
                       inputs={"masked": (man, tmp_path / "masked")}, out=tmp_path / "ds",
                       metrics_path=None)
    assert info["used_all"] and info["train"] == 3 and info["rejected"] == 1
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert said.count("only 3 available") == 1 and "only 3 are available" not in said  # once
    rej = manifest.read(tmp_path / "ds" / "rejects.jsonl")
    assert rej[0]["id"] == "s004" and rej[0]["reason"]


def test_no_training_image_left_stops_naming_why(tmp_path):
    from spidergan.outcome import EmptyOutput

    man = make_images(tmp_path / "masked", n=3, size=40)
    for f in (tmp_path / "masked" / "images").iterdir():
        f.write_bytes(b"not a png")
    with pytest.raises(EmptyOutput, match=r"no training images from 3 upstream records: \w+ 3"):
        dataset.run(DatasetParams(size=10, holdout=0), 16, seed=0,
                    inputs={"masked": (man, tmp_path / "masked")}, out=tmp_path / "ds",
                    metrics_path=None)


def test_loader_batches_are_a_function_of_step(tmp_path):
    man = make_images(tmp_path / "masked", n=6, size=40)
    dataset.run(DatasetParams(size=6, holdout=0), 16, seed=0,
                inputs={"masked": (man, tmp_path / "masked")}, out=tmp_path / "ds", metrics_path=None)
    ds = dataset.ImageDataset(tmp_path / "ds")
    a = ds.batch(5, 4, seed=1, mirror=True)
    b = ds.batch(5, 4, seed=1, mirror=True)
    assert a.shape == (4, 3, 16, 16) and float(a.min()) >= -1 and float(a.max()) <= 1
    assert (a == b).all()
    # one epoch visits every image once
    seen = np.concatenate([ds.batch(s, 3, seed=1, mirror=False).reshape(3, -1).numpy() for s in (0, 1)])
    assert len({row.tobytes() for row in seen}) == 6
    with pytest.raises(FileNotFoundError, match="spidergan dataset"):
        dataset.ImageDataset(tmp_path / "missing")
