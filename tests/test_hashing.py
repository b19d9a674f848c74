"""Hashes equal imagehash bit for bit; Hamming search equals a brute-force reference."""

import imagehash
import numpy as np
import pytest
from PIL import Image

from spidergan import hashing

IMAGEHASH = {"ahash": imagehash.average_hash, "dhash": imagehash.dhash,
             "phash": imagehash.phash, "whash": imagehash.whash}


def _natural(rng, n, lo=24, hi=160):
    """Smooth colour noise with a few hard-edged shapes: photo-like spectra, varied sizes/modes."""
    out = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(lo, hi, 2))
        coarse = rng.random((max(2, h // int(rng.integers(4, 16))), max(2, w // 6), 3))
        im = Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        a = np.asarray(im).copy()
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        a[y0:y0 + h // 3, x0:x0 + w // 4] = rng.integers(0, 256, 3)
        im = Image.fromarray(a)
        if i % 7 == 0:
            im = im.convert("L")
        elif i % 11 == 0:
            im = im.convert("RGBA")
        out.append(im)
    out.append(Image.new("RGB", (40, 30), (90, 90, 90)))  # flat: DCT is all rounding noise
    return out


@pytest.fixture(scope="module")
def pictures():
    return _natural(np.random.default_rng(5), 520)


@pytest.mark.parametrize("kind,size", [("phash", 8), ("phash", 6), ("phash", 16), ("dhash", 8),
                                       ("dhash", 12), ("ahash", 8), ("ahash", 5)])
def test_bit_identical_to_imagehash(pictures, kind, size):
    ours = hashing.hash_images(pictures, kind, size)
    assert ours.dtype == np.uint64 and ours.shape == (len(pictures), hashing.n_words(size))
    ref = [IMAGEHASH[kind](im, hash_size=size) for im in pictures]
    mismatched = [i for i, r in enumerate(ref) if not np.array_equal(ours[i], hashing.from_imagehash(r))]
    assert mismatched == []
    # packing keeps imagehash's bit order: the hex strings are the same
    assert [hashing.to_hex(ours[i], size * size) for i in range(40)] == [str(r) for r in ref[:40]]


def test_whash_identical_on_a_sample(pictures):
    sample = pictures[:60]
    ours = hashing.hash_images(sample, "whash", 8)
    ref = np.stack([hashing.from_imagehash(imagehash.whash(im)) for im in sample])
    assert np.array_equal(ours, ref)


def test_pack_roundtrip_and_hex():
    rng = np.random.default_rng(0)
    for nbits in (4, 36, 64, 100, 256):
        bits = rng.random((9, nbits)) > 0.5
        packed = hashing.pack_bits(bits)
        assert packed.shape == (9, -(-nbits // 64)) and packed.dtype == np.uint64
        assert np.array_equal(hashing.unpack_bits(packed, nbits), bits)
        assert np.array_equal(hashing.from_hex(hashing.to_hex(packed[3], nbits), nbits), packed[3])
    one = hashing.pack_bits(np.array([[True] + [False] * 63]))
    assert one[0, 0] == np.uint64(1 << 63)  # the first bit is the most significant


def test_files_exact_equals_images_and_fast_close(tmp_path, pictures):
    paths = []
    for i, im in enumerate(pictures[:30]):
        big = im.convert("RGB").resize((im.width * 5, im.height * 5), Image.BICUBIC)
        p = tmp_path / f"{i}.jpg"
        big.save(p, quality=90)
        paths.append(p)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    paths.insert(3, tmp_path / "broken.jpg")
    paths.append(tmp_path / "missing.png")
    got = hashing.hash_files(paths, "phash", workers=2)
    assert [(e[0].rsplit("/", 1)[-1], e[1]) for e in got.errors] == [
        ("broken.jpg", "not_an_image"), ("missing.png", "missing")]
    assert len(got.paths) == 30 and got.index[3] == 4
    decoded = [Image.open(p) for p in got.paths]
    assert np.array_equal(got.hashes, hashing.hash_images(decoded, "phash"))
    fast = hashing.hash_files(got.paths, "phash", fast=True)
    d = np.bitwise_count(fast.hashes[:, 0] ^ got.hashes[:, 0])
    assert np.mean(d <= 2) >= 0.8


def test_exif_orientation_is_applied(tmp_path):
    im = _natural(np.random.default_rng(1), 1, 60, 61)[0].convert("RGB").resize((120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    upright = Image.open(tmp_path / "r.jpg").transpose(Image.Transpose.ROTATE_270)
    got = hashing.hash_files([tmp_path / "r.jpg"], "dhash")
    assert np.array_equal(got.hashes, hashing.hash_images([upright], "dhash"))


def test_empty_inputs():
    assert hashing.hash_images([], "phash").shape == (0, 1)
    got = hashing.hash_files([], "phash")
    assert got.hashes.shape == (0, 1) and got.errors == []
    i, d = hashing.knn(np.zeros((0, 1), np.uint64), np.zeros((5, 1), np.uint64))
    assert i.shape == (0, 1)
    a, b, c = hashing.radius(np.zeros((0, 1), np.uint64), None, 4)
    assert len(a) == len(b) == len(c) == 0


def brute_force_knn(query, ref, k, nbits):
    """Full distance matrix from unpacked bits, stable sort by distance (ties: lower index)."""
    qb = hashing.unpack_bits(query, nbits).astype(np.int32)
    rb = qb if ref is None else hashing.unpack_bits(ref, nbits).astype(np.int32)
    d = (qb[:, None, :] != rb[None, :, :]).sum(axis=2)
    if ref is None:
        np.fill_diagonal(d, 10**6)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1), d


def _clustered(rng, n, words):
    """Hashes with many near and exact duplicates, so ties and small distances are common."""
    base = rng.integers(0, 2**63, (max(1, n // 8), words), dtype=np.uint64)
    h = base[rng.integers(0, len(base), n)].copy()
    flips = rng.integers(0, 64, (n, 3))
    for j in range(3):
        mask = (rng.random(n) < 0.5).astype(np.uint64) << flips[:, j].astype(np.uint64)
        h[:, 0] ^= mask
    return h


@pytest.mark.parametrize("words", [1, 2])
@pytest.mark.parametrize("k", [1, 4])
def test_knn_equals_brute_force(words, k):
    rng = np.random.default_rng(words * 10 + k)
    q, r = _clustered(rng, 300, words), _clustered(rng, 257, words)
    # tiny memory bound: many chunks, several threads
    idx, dist = hashing.knn(q, r, k, max_bytes=40_000, workers=3)
    ref_idx, ref_dist, _ = brute_force_knn(q, r, k, words * 64)
    assert np.array_equal(idx, ref_idx) and np.array_equal(dist, ref_dist)
    idx, dist = hashing.knn(q, None, k, max_bytes=40_000, workers=2)
    ref_idx, ref_dist, _ = brute_force_knn(q, None, k, words * 64)
    assert np.array_equal(idx, ref_idx) and np.array_equal(dist, ref_dist)


def test_knn_fewer_candidates_than_k():
    h = np.array([[1], [3], [7]], dtype=np.uint64)
    idx, dist = hashing.knn(h, None, k=4)
    assert idx[0].tolist() == [1, 2, -1, -1] and dist[0].tolist() == [1, 2, -1, -1]


@pytest.mark.parametrize("words", [1, 3])
def test_radius_equals_brute_force(words):
    rng = np.random.default_rng(7 + words)
    q, r = _clustered(rng, 310, words), _clustered(rng, 190, words)
    for t in (0, 2, 5):
        ii, jj, dd = hashing.radius(q, r, t, max_bytes=30_000, workers=2)
        _, _, d = brute_force_knn(q, r, 1, words * 64)
        ri, rj = np.nonzero(d <= t)
        assert np.array_equal(ii, ri) and np.array_equal(jj, rj)
        assert np.array_equal(dd, d[ri, rj])
        ii, jj, dd = hashing.radius(q, None, t, max_bytes=30_000, workers=2)
        _, _, d = brute_force_knn(q, None, 1, words * 64)
        ri, rj = np.nonzero(np.triu(d <= t, k=1))
        assert np.array_equal(ii, ri) and np.array_equal(jj, rj) and np.array_equal(dd, d[ri, rj])


def test_bad_arguments():
    with pytest.raises(ValueError):
        hashing.hash_images([Image.new("RGB", (8, 8))], "md5")
    with pytest.raises(ValueError):
        hashing.hash_images([Image.new("RGB", (8, 8))], "whash", 6)
    with pytest.raises(ValueError):
        hashing.knn(np.zeros((2, 1), np.uint64), np.zeros((2, 2), np.uint64))
    with pytest.raises(TypeError):
        hashing.radius(np.zeros((2, 1), np.int64), None, 3)


def test_fast_path_decodes_jpegs_smaller_than_its_draft(tmp_path):
    # a 40 px JPEG is below the 128 px draft of a 256-bit pHash: decoded at full size, not a crash
    rng = np.random.default_rng(0)
    path = tmp_path / "small.jpg"
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(path, quality=90)
    fast = hashing.hash_files([path], "phash", 16, fast=True)
    exact = hashing.hash_files([path], "phash", 16)
    assert not fast.errors and np.array_equal(fast.hashes, exact.hashes)


def test_radius_upper_is_the_brute_force_upper_triangle():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2**63, (300, 1), dtype=np.uint64) & np.uint64(0xFFFF)  # 16 live bits: many pairs
    b = a ^ (rng.random((300, 1)) < 0.3).astype(np.uint64)
    d = np.bitwise_count(a[:, 0][:, None] ^ b[:, 0][None, :])
    ii, jj = np.nonzero((d <= 3) & (np.arange(300)[:, None] < np.arange(300)[None, :]))
    i, j, dist = hashing.radius(a, b, 3, upper=True)
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(ii.tolist(), jj.tolist()))
    assert np.array_equal(dist, d[i, j])
    with pytest.raises(ValueError):
        hashing.radius(a, b[:10], 3, upper=True)
