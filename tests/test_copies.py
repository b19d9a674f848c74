"""The copy engine on planted copies, the calibrated threshold and Meehan et al.'s C_T."""

import numpy as np
import pytest
from PIL import Image
from scipy.stats import beta, mannwhitneyu

from spidergan import copies, hashing
from spidergan.metrics import copying


def _photo(rng, size=96):
    """Photo-like: smooth colour field plus a few blobs (no two alike)."""
    coarse = rng.random((5, 5, 3)) * 255
    a = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(4):
        cx, cy, r = rng.uniform(10, size - 10, 2).tolist() + [rng.uniform(5, 18)]
        a[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return Image.fromarray(np.clip(a + rng.normal(0, 3, a.shape), 0, 255).astype(np.uint8))


def _transform(name, im, rng):
    w, h = im.size
    if name == "flipped":
        return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if name == "rot90":
        return im.transpose(Image.Transpose.ROTATE_90)
    if name == "rot180":
        return im.transpose(Image.Transpose.ROTATE_180)
    if name == "crop10":
        return im.crop((int(0.06 * w), int(0.03 * h), w - int(0.04 * w), h - int(0.07 * h)))
    if name == "brightness":
        return Image.fromarray(np.clip(np.asarray(im, np.float32) * 1.2 - 20, 0, 255).astype(np.uint8))
    if name == "rescale":
        return im.resize((w * 2 // 3, h * 2 // 3), Image.BILINEAR)
    if name == "flipped_crop10":
        return _transform("crop10", _transform("flipped", im, rng), rng)
    raise ValueError(name)


TRANSFORMS = ("flipped", "rot90", "rot180", "crop10", "brightness", "rescale", "flipped_crop10")


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    refs = [_photo(rng) for _ in range(24)]
    queries, truth, names = [], [], []
    for k, t in enumerate(TRANSFORMS):
        for j in (k, k + 8):
            queries.append(_transform(t, refs[j], rng))
            truth.append(j)
            names.append(t)
    for _ in range(8):
        queries.append(_photo(rng))
        truth.append(-1)
        names.append("none")
    return refs, queries, np.array(truth), names


def test_every_form_and_edit_is_found_and_non_copies_are_not(planted):
    refs, queries, truth, names = planted
    forms = copies.forms_for(mirror=True, rotations=True)
    q = copies.signatures(queries, forms=forms)[0]
    r = copies.signatures(refs, forms=("plain",))[0]
    m = copies.nearest(q, r)
    copy = truth >= 0
    assert np.array_equal(m.index[copy], truth[copy])
    assert (m.distance[copy] <= copies.DEFAULT_THRESHOLD).all(), dict(zip(names, m.distance.round(3)))
    assert (m.distance[~copy] > copies.DEFAULT_THRESHOLD).all()
    got = dict(zip(names, m.form_names()))
    assert got["flipped"] == "flipped" and got["rot180"] == "rot180" and got["rot90"] in ("rot90", "rot270")
    # mirror only: the turned copies are not seen, the flipped ones are
    q2 = copies.signatures(queries, forms=copies.forms_for(mirror=True))[0]
    m2 = copies.nearest(q2, r)
    turned = np.isin(names, ["rot90", "rot180"])
    assert (m2.distance[turned] > copies.DEFAULT_THRESHOLD).all()
    assert (m2.distance[np.array(names) == "flipped"] <= copies.DEFAULT_THRESHOLD).all()


def test_plain_form_is_imagehash_and_flipped_form_is_close_to_it(planted):
    import imagehash

    refs = planted[0][:6]
    s = copies.signatures(refs, forms=("plain", "flipped", "rot90"))[0]
    for k, im in enumerate(refs):
        assert hashing.to_hex(s.hashes[k], 256) == str(imagehash.phash(im, hash_size=16))
        flipped = hashing.from_imagehash(imagehash.phash(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 16))
        assert np.bitwise_count(s.form_hashes[1][k] ^ flipped).sum() <= 8
        # np.rot90 turns counter-clockwise, as PIL's ROTATE_90
        turned = hashing.from_imagehash(imagehash.phash(im.transpose(Image.Transpose.ROTATE_90), 16))
        assert np.bitwise_count(s.form_hashes[2][k] ^ turned).sum() <= 12


def test_self_pairs_find_a_flipped_duplicate():
    rng = np.random.default_rng(5)
    ims = [_photo(rng) for _ in range(10)]
    ims.append(ims[3].transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    ims.append(_transform("crop10", ims[6], rng))
    s = copies.signatures(ims, forms=copies.forms_for(mirror=True))[0]
    i, j, f, d, v = copies.self_pairs(s, radius=64, shortlist=2)
    found = {(a, b) for a, b, c in zip(i.tolist(), j.tolist(), v.tolist()) if c <= copies.DEFAULT_THRESHOLD}
    assert found == {(3, 10), (6, 11)}
    assert s.forms[int(f[(i == 3) & (j == 10)][0])] == "flipped"
    # the hash radius alone (no k-NN shortlist) finds the flipped copy through the flipped form
    i, j, f, d, v = copies.self_pairs(s, radius=64, shortlist=0)
    hit = (i == 3) & (j == 10)
    assert hit.any() and s.forms[int(f[hit][0])] == "flipped" and v[hit][0] <= copies.DEFAULT_THRESHOLD
    assert d[hit][0] <= 64


def test_calibrated_threshold_by_hand():
    d = np.array([0.5, 0.2, 0.9, 0.4, 0.3, 0.6, 0.7, 0.8, 0.35, 0.45])
    cal = copying.calibrate_threshold(d, false_rate=0.01)
    # k = floor(0.01 * 10) = 0: just below the smallest, no held-out real within
    assert cal["threshold"] < 0.2 and cal["threshold"] > 0.2 - 1e-9 and cal["false_copies"] == 0
    assert np.isclose(cal["false_copy_rate_upper"], 1 - 0.05 ** (1 / 10))  # Clopper-Pearson, x = 0
    cal = copying.calibrate_threshold(d, false_rate=0.25)
    # k = 2: the two smallest (0.2, 0.3) are within, the third (0.35) not
    assert 0.3 <= cal["threshold"] < 0.35 and cal["false_copies"] == 2 and cal["false_copy_rate"] == 0.2
    assert np.isclose(cal["false_copy_rate_upper"], beta.ppf(0.95, 3, 8))
    assert copying.calibrate_threshold([], default=0.15)["threshold"] == 0.15


def test_mann_whitney_z_matches_scipy():
    test_d = np.array([0.3, 0.5, 0.5, 0.8, 0.9])
    fake_d = np.array([0.1, 0.2, 0.5, 0.6, 0.25, 0.05, 0.7])
    u = mannwhitneyu(fake_d, test_d).statistic  # U of the first sample: pairs fake > test (+ ties/2)
    # by hand: 0.6 > 0.3, 0.5, 0.5 (3); 0.7 > 0.3, 0.5, 0.5 (3); 0.5 > 0.3 (1) and ties 2 x 0.5
    assert u == 8.0
    m, n = 7, 5
    assert np.isclose(copying.mann_whitney_z(test_d, fake_d), (u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))


def test_ct_weights_cells_by_test_share_and_drops_cells_with_few_fakes():
    rng = np.random.default_rng(1)
    # two far-apart training clusters: the k-means cells are the clusters
    train = np.vstack([rng.normal(0, 0.1, (30, 2)), rng.normal(10, 0.1, (30, 2))])
    test_x = np.vstack([rng.normal(0, 0.1, (6, 2)), rng.normal(10, 0.1, (2, 2))])
    fake_x = np.vstack([rng.normal(0, 0.1, (25, 2)), rng.normal(10, 0.1, (25, 2))])
    test_d, fake_d = rng.random(8), rng.random(50) * 0.5
    ct = copying.data_copying_ct(train, test_x, fake_x, test_d, fake_d, cells=2, min_fakes=20)
    z0 = copying.mann_whitney_z(test_d[:6], fake_d[:25])
    z1 = copying.mann_whitney_z(test_d[6:], fake_d[25:])
    assert ct["cells_used"] == 2 and np.isclose(ct["ct"], (6 / 8 * z0 + 2 / 8 * z1) / 1.0)
    # the second cell holds too few fakes: it is left out, weights renormalised
    ct = copying.data_copying_ct(train, test_x, fake_x[:35], test_d, fake_d[:35], cells=2, min_fakes=20)
    assert ct["cells_used"] == 1 and np.isclose(ct["ct"], z0)
    # copies (fakes at distance ~0) drive C_T strongly negative
    ct = copying.data_copying_ct(train, test_x, fake_x, test_d + 0.5, np.zeros(50), cells=2, min_fakes=20)
    assert ct["ct"] < -3


def test_a_blur_with_the_same_layout_is_not_a_copy():
    # what an undertrained generator draws: a soft dark blob where the training image has a
    # spider. Correlation alone matched them (the demo's "memorization" of blobs)
    size = 64
    yy, xx = np.mgrid[:size, :size]
    spider = np.full((size, size), 235.0)
    spider[(xx - 32) ** 2 + (yy - 30) ** 2 < 81] = 40
    for ang in np.linspace(0, 2 * np.pi, 8, endpoint=False):  # eight thin legs
        for t in np.linspace(9, 26, 40):
            spider[int(30 + t * np.sin(ang)), int(32 + t * np.cos(ang))] = 50
    import cv2

    blob = cv2.GaussianBlur(spider, (0, 0), 5)
    ims = [Image.fromarray(a.astype(np.uint8)).convert("RGB") for a in (spider, blob)]
    s = copies.signatures(ims[:1], forms=("plain",))[0]
    q = copies.signatures(ims, forms=("plain",))[0]
    m = copies.nearest(q, s)
    assert m.distance[0] < 0.02 and m.distance[1] > copies.DEFAULT_THRESHOLD
