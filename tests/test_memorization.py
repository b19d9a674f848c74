"""Memorization measures and the `spidergan nearest` command on folders the test draws."""

import csv
import io

import numpy as np
from PIL import Image

from spidergan import cli, hashing
from spidergan.metrics import memorization


def _pictures(rng, n, size=64):
    out = []
    for _ in range(n):
        coarse = rng.random((6, 6, 3)) * 255
        out.append(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BICUBIC))
    return out


def test_nearest_finds_copies_and_flipped_copies():
    reals = _pictures(np.random.default_rng(0), 30)
    copies_ = [Image.fromarray(np.clip(np.asarray(im, np.int16) + 5, 0, 255).astype(np.uint8))
               for im in reals[:4]]
    flipped = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in reals[4:6]]
    fresh = _pictures(np.random.default_rng(1), 6)
    res = memorization.nearest(copies_ + flipped + fresh, reals, threshold=0.15)
    assert res.index[:6].tolist() == [0, 1, 2, 3, 4, 5] and (res.distance[:6] <= 0.05).all()
    assert res.form[:4] == ["plain"] * 4 and res.form[4:6] == ["flipped"] * 2
    assert (res.distance[6:] > 0.15).all()
    assert np.isclose(res.rate, np.mean(res.distance <= 0.15))
    assert res.summary()["within_threshold"] == 6 and res.summary()["copies_by_form"] == {"plain": 4, "flipped": 2}
    # without the flipped form a flipped copy is not found: the hash is not flip-invariant
    plain = memorization.nearest(flipped, reals, threshold=0.15, forms=("plain",))
    assert not plain.within.any()
    idx, dist = memorization.nearest_by_hash(hashing.hash_images(copies_), hashing.hash_images(reals))
    assert idx.tolist() == [0, 1, 2, 3]
    pic = memorization.pairs_picture(res, n=6, cell=32)
    assert pic.mode == "RGB" and pic.height >= 3 * 32
    assert memorization.memorization_rate(np.array([0, 3, 9]), 3) == 2 / 3
    assert memorization.memorization_rate(np.array([]), 3) == 0.0


def test_nearest_by_features_is_cosine():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(50, 16)).astype(np.float32)
    fake = np.vstack([real[7] * 3.0, rng.normal(size=(9, 16))]).astype(np.float32)
    idx, dist = memorization.nearest_by_features(fake, real, chunk_rows=3)
    assert idx[0] == 7 and abs(dist[0]) < 1e-5
    sim = (fake / np.linalg.norm(fake, axis=1, keepdims=True)) @ (real / np.linalg.norm(real, axis=1, keepdims=True)).T
    assert np.array_equal(idx, sim.argmax(1)) and np.allclose(dist, 1 - sim.max(1), atol=1e-5)


def test_nearest_command(tmp_path, capsys):
    q, r = tmp_path / "q", tmp_path / "r"
    (r / "sub").mkdir(parents=True)
    q.mkdir()
    reals = _pictures(np.random.default_rng(3), 8, 96)
    for i, im in enumerate(reals):
        im.save(r / "sub" / f"real{i}.png")
    reals[2].save(q / "copy.jpg", quality=90)
    _pictures(np.random.default_rng(4), 1, 96)[0].save(q / "new.png")
    (q / "broken.png").write_bytes(b"nope")
    out, pairs = tmp_path / "n.csv", tmp_path / "pairs.png"
    reals[5].transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(q / "flip.jpg", quality=90)
    assert cli.main(["nearest", str(q), str(r), "--out", str(out), "--pairs", str(pairs)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [row["query"] for row in rows] == ["copy.jpg", "flip.jpg", "new.png"]
    assert rows[0]["nearest"] == "sub/real2.png" and rows[0]["within_threshold"] == "True"
    assert rows[1]["nearest"] == "sub/real5.png" and rows[1]["form"] == "flipped"
    assert rows[2]["within_threshold"] == "False"
    printed = capsys.readouterr()
    assert "2 of 3 query images within copy distance 0.14" in printed.out and "broken.png" in printed.err
    assert "flipped 1, plain 1" in printed.out
    assert Image.open(pairs).size[0] > 96
    # without --out the CSV goes to stdout, the summary to stderr
    assert cli.main(["nearest", str(q), str(r), "--hash", "dhash"]) == 0
    printed = capsys.readouterr()
    assert list(csv.reader(io.StringIO(printed.out)))[0] == ["query", "nearest", "distance", "form",
                                                             "hash_distance", "within_threshold"]
    assert "query images within copy distance" in printed.err
    # an empty folder is a warning and an empty result, a missing one an error
    (tmp_path / "none").mkdir()
    assert cli.main(["nearest", str(tmp_path / "none"), str(r)]) == 0
    assert "0 of 0" in capsys.readouterr().err
    assert cli.main(["nearest", str(tmp_path / "missing"), str(r)]) == 2


def test_measure_for_evaluate(tmp_path):
    reals = _pictures(np.random.default_rng(5), 12)
    fakes = reals[:2] + _pictures(np.random.default_rng(6), 4)
    feats_r = np.random.default_rng(7).normal(size=(12, 8))
    feats_f = np.vstack([feats_r[:2], np.random.default_rng(8).normal(size=(4, 8))])
    m = memorization.measure(fakes, reals, fake_features=feats_f, real_features=feats_r,
                             pairs_path=tmp_path / "pairs.png")
    assert m["hash_queries"] == 6 and m["hash_within_threshold"] >= 2
    assert m["feature_memorization_rate"] >= 0.333 and m["feature_min_distance"] < 1e-5
    assert (tmp_path / "pairs.png").exists()
