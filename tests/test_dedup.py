"""The dedup stage on crops of a drawn raw folder with planted near-duplicates."""

import csv
import json
import logging

import numpy as np
import pytest
from PIL import Image

from fake_raw import make_raw
from spidergan import crop, dedup, manifest, params


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    root = tmp_path_factory.mktemp("dd")
    raw = make_raw(root / "raw", n=24, seed=3)
    crop.run(params.from_dict({"crop": {"boxes": "truth", "min_side": 48, "size": 64}}).crop, raw=raw,
             out=root / "crops", decisions_path=None, metrics_path=None)
    return root / "crops"


def test_groups_from_pairs_is_union_find():
    lab = dedup.groups_from_pairs(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert lab[0] == lab[1] == lab[2] and lab[4] == lab[5] and len(set(lab.tolist())) == 3


def test_dedup_finds_planted_duplicates(crops, tmp_path):
    p = params.from_dict({"dedup": {"threshold": 6, "hash_size": 8, "sweep_max": 24}}).dedup
    m = dedup.run(p, crops=crops, out=tmp_path / "u", metrics_path=tmp_path / "m.json",
                  plots_dir=tmp_path / "plots")
    recs = manifest.read(crops / "manifest.jsonl")
    planted = {r["truth_dup_group"] for r in recs if r["truth_dup_group"]}
    assert m["images_in"] == len(recs) and m["truth_pairs"] == len(planted) > 0
    assert m["recall"] >= 0.95 and m["false_pair_share"] <= 0.01
    assert m["kept"] == len(recs) - m["removed"] and m["groups"] >= len(planted)
    kept = manifest.read(tmp_path / "u" / "manifest.jsonl")
    assert len(kept) == m["kept"] and all("group" in r for r in kept)
    groups = manifest.read(tmp_path / "u" / "groups.jsonl")
    by_id = {r["id"]: r for r in recs}
    for g in groups:  # the kept one is ranked first: largest side, then highest confidence
        sides = [by_id[i]["side"] for i in g["members"]]
        assert g["kept"] == g["members"][0] and sides[0] == max(sides)
    rows = list(csv.DictReader(open(tmp_path / "plots" / "pr_sweep.csv")))
    assert [int(r["threshold"]) for r in rows] == list(range(p.sweep_max + 1))
    rec = [float(r["recall"]) for r in rows]
    assert rec == sorted(rec) and rec[-1] == 1.0
    assert Image.open(tmp_path / "plots" / "groups.png").size[0] > 100
    assert json.loads((tmp_path / "m.json").read_text()) == m
    z = np.load(tmp_path / "u" / "hashes.npz")
    assert z["hashes"].dtype == np.uint64 and len(z["ids"]) == len(recs)


def test_dedup_skips_unreadable_and_handles_empty(crops, tmp_path, caplog):
    import shutil

    c2 = tmp_path / "c"
    shutil.copytree(crops, c2)
    victim = manifest.read(c2 / "manifest.jsonl")[1]
    (c2 / victim["file"]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with caplog.at_level(logging.WARNING):
        m = dedup.run(params.from_dict({}).dedup, crops=c2, out=tmp_path / "u", metrics_path=None,
                      plots_dir=None)
    assert m["unreadable"] == 1 and m["hashed"] == m["images_in"] - 1
    assert manifest.read(tmp_path / "u" / "rejects.jsonl")[0]["id"] == victim["id"]
    assert victim["id"] in caplog.text

    empty = tmp_path / "empty"
    empty.mkdir()
    from spidergan.outcome import EmptyOutput

    with pytest.raises(EmptyOutput, match="dedup: no crops in"):   # never a silent empty stage
        dedup.run(params.from_dict({}).dedup, crops=empty, out=tmp_path / "u2",
                  metrics_path=None, plots_dir=tmp_path / "p2")


def test_score_pairs_counts():
    # 4 crops; true pairs (0,1) and (2,3); reported (0,1) at 2, (0,2) at 5
    rows = dedup.score_pairs(4, np.array([0, 0]), np.array([1, 2]), np.array([2, 5]),
                             np.array([0, 2]), np.array([1, 3]), np.array([2, 9]), [1, 2, 5, 9])
    assert [(r["precision"], r["recall"]) for r in rows] == [(1.0, 0.0), (1.0, 0.5), (0.5, 0.5), (0.5, 1.0)]


def test_crop_and_dedup_commands(tmp_path, capsys):
    from spidergan import cli

    raw = make_raw(tmp_path / "raw", n=8, seed=9)
    (tmp_path / "params.yaml").write_text("crop:\n  boxes: truth\n  min_side: 48\n  size: 32\ndedup:\n  threshold: 4\n  hash_size: 8\n")
    args = ["--params", str(tmp_path / "params.yaml")]
    assert cli.main(args + ["crop", "--raw", str(raw), "--out", str(tmp_path / "c"),
                            "--metrics", str(tmp_path / "crop.json")]) == 0
    assert "crops=" in capsys.readouterr().out
    assert cli.main(args + ["dedup", "--crops", str(tmp_path / "c"), "--out", str(tmp_path / "u"),
                            "--metrics", str(tmp_path / "dedup.json"), "--plots", str(tmp_path / "p")]) == 0
    m = json.loads((tmp_path / "dedup.json").read_text())
    assert m["threshold"] == 4 and m["kept"] == len(manifest.read(tmp_path / "u" / "manifest.jsonl"))
