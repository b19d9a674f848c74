"""`spidergan compare` on a hand-made `dvc exp show --json`: grouping by swept params, spread
over seeds (against Python's statistics module), effects and their noise band (hand-computed),
the best point, runs left out, and the offline report files."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from spidergan import compare


def _params(aug, size, seed):
    return {"seed": 0, "dataset": {"size": size, "holdout": 4},
            "train": {"augment": "fixed", "aug_prob": aug, "seed": seed, "kimg": 1.0}}


# swd by hand: 100, +10 at aug 0.8, -20 at size 128; seed 1 -1, seed 2 +1 (sd sqrt(2) per point)
# memorization_rate: 0.5 at (0.2, 16) (that point copies), else 0.01; ct in every run
def _metrics(aug, size, seed):
    swd = 100 + (10 if aug == 0.8 else 0) - (20 if size == 128 else 0) + (-1 if seed == 1 else 1)
    mem = 0.5 if (aug, size) == (0.2, 16) else 0.01
    if (aug, size) == (0.2, 16):
        swd -= 30  # the copying point has the best SWD
    return {"swd": swd, "memorization_rate": mem, "copy_ratio": 1.0 + seed / 100, "ct": -1.0 * seed,
            "authenticity": 0.9, "kimg": 1.0, "num_train": size, "memorization_space": "phash",
            "fid_warning": "no weights"}


def _show(extra=()):
    exps = []
    for aug in (0.2, 0.8):
        for size in (16, 128):
            for seed in (1, 2):
                name = f"a{aug}-s{size}-r{seed}"
                exps.append({"name": name, "executor": {"state": "success"}, "revs": [
                    {"rev": name + "rev", "name": name, "data": {
                        "params": {"params.yaml": {"data": _params(aug, size, seed)}},
                        "metrics": {"metrics/evaluate.json": {"data": _metrics(aug, size, seed)}}}}]})
    exps += list(extra)
    base = {"rev": "abc", "name": "main", "data": {
        "params": {"params.yaml": {"data": _params(0.0, 2000, None)}},
        "metrics": {"metrics/evaluate.json": {"data": _metrics(0.0, 2000, 0)}}},
        "experiments": exps}
    return [{"rev": "workspace", "data": {}}, base]


def _curve(rev, path):
    assert path == "plots/evaluate/snapshots.json"
    if rev.startswith("a0.8-s128"):
        return json.dumps([{"kimg": 0.0, "swd": 200.0}, {"kimg": 0.5, "swd": 120.0},
                           {"kimg": 1.0, "swd": 90.0}])
    return None


def test_points_spread_effects_best_and_files(tmp_path):
    left = [{"name": "queued1", "executor": {"state": "queued"}, "revs": [{"rev": "q", "data": {}}]},
            {"name": "failed1", "executor": {"state": "failed"}, "revs": [{"rev": "f", "data": {}}]}]
    res = compare.compare(_show(left), out=tmp_path / "r", plots=tmp_path / "p", read=_curve)
    assert sorted(res.skipped) == [("failed1", "failed"), ("queued1", "queued")]
    assert res.swept == ["dataset.size", "train.aug_prob"]  # train.seed is the spread, not a sweep
    assert [p.key for p in res.points] == [(16, 0.2), (16, 0.8), (128, 0.2), (128, 0.8)]
    assert res.quality == ["swd"] and res.memorization == ["memorization_rate", "ct", "copy_ratio",
                                                             "authenticity"]
    p = res.points[3]
    assert p.mean("swd") == statistics.mean([89, 91])
    assert p.sd("swd") == pytest.approx(statistics.stdev([89, 91]))  # sample sd, ddof 1
    assert compare.pooled_sd(res.points, "swd") == pytest.approx(2 ** 0.5)
    # the copying point (0.2, 16) has the lowest swd but memorization_rate 0.5 > 0.05
    assert res.best == 2 and "1 point(s) left out" in res.best_reason
    eff = {(e.param, e.metric): e for e in res.effects}
    aug = eff[("train.aug_prob", "swd")]
    # level means: aug 0.2 = (70 + 80) / 2 = 75, aug 0.8 = (110 + 90) / 2 = 100
    assert aug.means == [75, 100] and aug.delta == 25
    # se of a difference of two level means, each the mean of 2 points of 2 seeds:
    # sqrt(2) * sqrt(1/4 + 1/4) = 1
    assert aug.se == pytest.approx(1.0) and aug.noise is False
    assert aug.sentence().endswith(": worse")
    size = eff[("dataset.size", "memorization_rate")]
    assert size.delta == pytest.approx(-0.245) and size.sentence().endswith(": less copying")
    ct = eff[("train.aug_prob", "ct")]  # the same seed spread at every point: no effect
    assert ct.delta == 0 and ct.sentence().endswith("no change")

    rows = list(csv.DictReader(res.files["csv"].open()))
    assert [r["best"] for r in rows] == ["0", "0", "1", "0"]
    assert float(rows[3]["swd_mean"]) == 90 and float(rows[3]["views_per_image_mean"]) == 1000 / 128
    assert len(list(csv.DictReader(res.files["runs_csv"].open()))) == 8
    data = json.loads(res.files["json"].read_text())
    assert data["best"] == 2 and data["points"][3]["swd_sd"] == pytest.approx(2 ** 0.5)
    html = res.files["html"].read_text()
    assert html.count("data:image/png;base64,") == 2 and "//cdn" not in html and "<script" not in html
    assert "failed1" in html and "Best point: size=128, aug_prob=0.2" in html
    md = res.files["md"].read_text()
    assert "| 2 (best) | 128 | 0.2 | 2 | 80 ± 1.4 |" in md
    for key in ("png", "curves"):
        assert res.files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_run_per_point_says_spread_unknown(tmp_path):
    show = _show()
    show[1]["experiments"] = [e for e in show[1]["experiments"] if e["name"].endswith("r1")]
    res = compare.compare(show, out=tmp_path / "r", plots=tmp_path / "p")
    assert all(len(p.runs) == 1 and p.sd("swd") is None for p in res.points)
    e = next(x for x in res.effects if x.metric == "swd")
    assert e.se is None and e.noise is None and "no seed repeats" in e.sentence()
    assert "curves" not in res.files  # no snapshot series read


def test_inception_metrics_rank_when_present_and_missing_keys_are_skipped(tmp_path):
    show = _show()
    for i, e in enumerate(show[1]["experiments"]):
        m = e["revs"][0]["data"]["metrics"]["metrics/evaluate.json"]["data"]
        m["fid"] = 50.0 - i  # the last experiment has the best FID
        if i == 0:
            del m["ct"]  # one run without C_T: the key is not compared
    res = compare.compare(show, out=tmp_path / "r", plots=tmp_path / "p", max_memorization=None)
    assert res.quality[0] == "fid" and "ct" not in res.memorization
    assert res.best == 3


def test_nothing_finished_is_an_error(tmp_path):
    show = [{"rev": "abc", "data": {}, "experiments": [
        {"name": "q", "executor": {"state": "queued"}, "revs": [{"rev": "q", "data": {}}]}]}]
    with pytest.raises(compare.CompareError, match="no finished experiment.*q queued"):
        compare.compare(show, out=tmp_path / "r", plots=tmp_path / "p")


def test_effect_present_before_training_is_flagged(tmp_path):
    """copy_ratio rising with dataset.size at kimg 0 already is the reference set, not training."""
    def curve(rev, path):  # first snapshot: copy_ratio 1.0 at size 16, 1.1 at size 128
        size = 128 if "-s128-" in rev else 16
        return json.dumps([{"kimg": 0.0, "copy_ratio": 1.0 if size == 16 else 1.1},
                           {"kimg": 1.0, "copy_ratio": 1.0}])
    show = _show()
    for e in show[1]["experiments"]:
        m = e["revs"][0]["data"]["metrics"]["metrics/evaluate.json"]["data"]
        m["copy_ratio"] = 1.0 + (0.1 if "-s128-" in e["name"] else 0.0) + 0.001 * len(e["name"]) % 2
    res = compare.compare(show, out=tmp_path / "r", plots=tmp_path / "p", read=curve)
    size = next(x for x in res.effects if (x.param, x.metric) == ("dataset.size", "copy_ratio"))
    assert size.start_delta == pytest.approx(0.1)
    assert "first snapshot already" in size.sentence()
    aug = next(x for x in res.effects if (x.param, x.metric) == ("train.aug_prob", "swd"))
    assert aug.start_delta is None and "first snapshot" not in aug.sentence()  # no swd in curves
