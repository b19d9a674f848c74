"""Perceptual hashes over batches, stored packed, and exact Hamming search.

Hashes (aHash, dHash, pHash, wHash) are bit-identical to `imagehash` for the same decoded image:
the same Pillow conversion and Lanczos resize per image, then the arithmetic (mean, column
differences, the same `scipy.fftpack` DCT, median, wavelets) run over the whole batch at once.

Storage: a hash of `nbits = hash_size**2` bits is a row of `ceil(nbits / 64)` uint64 words, bits in
imagehash's order (row-major) from the most significant bit of the first word on, zero-padded at
the end; a 64-bit hash is one uint64, and `to_hex` gives the string `str(imagehash)` prints.

Decoding files runs on a thread pool (Pillow releases the GIL while decoding and resizing).
`fast=True` decodes JPEGs at a reduced DCT scale straight to grayscale (Pillow draft mode), still
at least `FAST_OVERSAMPLE` times the size the hash resizes to; `bench/hashing.py` measures how
often it agrees with the exact path.

Search is brute force and exact: XOR, vectorised popcount (`np.bitwise_count`), then argmin or
threshold, in row chunks whose temporary arrays stay under a memory bound, spread over threads.
Ties go to the lower reference index, as a stable sort by distance would order them.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import scipy.fftpack
from PIL import Image

from spidergan import images

KINDS = ("ahash", "dhash", "phash", "whash")
LANCZOS = Image.Resampling.LANCZOS
PHASH_HIGHFREQ = 4  # imagehash's highfreq_factor default
FAST_OVERSAMPLE = 2
# files per thread-pool task: one future per file costs more than a fast decode saves
FILES_PER_TASK = 16
DEFAULT_MAX_BYTES = 256 * 2**20
CHUNK_PAIRS = 2**20


def n_bits(hash_size: int) -> int:
    return hash_size * hash_size


def n_words(hash_size: int) -> int:
    return math.ceil(n_bits(hash_size) / 64)


def _check(kind: str, hash_size: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown hash {kind!r}; choose one of {', '.join(KINDS)}")
    if hash_size < 2:
        raise ValueError("hash_size must be at least 2")
    if kind == "whash" and hash_size & (hash_size - 1):
        raise ValueError("whash needs a power-of-two hash_size")


# --------------------------------------------------------------------------- packing
def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, nbits) booleans -> (N, ceil(nbits/64)) uint64, first bit in the top bit of word 0."""
    bits = np.asarray(bits, dtype=bool).reshape(len(bits), -1)
    n, nb = bits.shape
    words = max(1, math.ceil(nb / 64))
    padded = np.zeros((n, words * 64), dtype=bool)
    padded[:, :nb] = bits
    as_bytes = np.packbits(padded, axis=1, bitorder="big")
    return as_bytes.view(">u8").astype(np.uint64).reshape(n, words)


def unpack_bits(packed: np.ndarray, nbits: int) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint64)
    packed = np.ascontiguousarray(packed[:, None] if packed.ndim == 1 else packed)
    as_bytes = packed.astype(">u8").view(np.uint8).reshape(len(packed), -1)
    return np.unpackbits(as_bytes, axis=1, bitorder="big")[:, :nbits].astype(bool)


def to_hex(row: np.ndarray, nbits: int) -> str:
    """The hex string imagehash prints for the same hash."""
    bits = unpack_bits(np.asarray(row).reshape(1, -1), nbits)[0]
    value = int("".join("1" if b else "0" for b in bits), 2)
    return format(value, f"0{math.ceil(nbits / 4)}x")


def from_hex(text: str, nbits: int) -> np.ndarray:
    value = int(text, 16)
    bits = np.array([(value >> (nbits - 1 - i)) & 1 for i in range(nbits)], dtype=bool)
    return pack_bits(bits[None])[0]


def from_imagehash(h) -> np.ndarray:
    """An `imagehash.ImageHash` as a packed row."""
    return pack_bits(np.asarray(h.hash).reshape(1, -1))[0]


# --------------------------------------------------------------------------- hashing
def _small_size(kind: str, hash_size: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) imagehash resizes to before its arithmetic."""
    if kind == "ahash":
        return hash_size, hash_size
    if kind == "dhash":
        return hash_size + 1, hash_size
    if kind == "phash":
        s = hash_size * PHASH_HIGHFREQ
        return s, s
    natural = 2 ** int(np.log2(min(image_size)))  # whash's default image_scale
    s = max(natural, hash_size)
    return s, s


def _shrink(gray: Image.Image, kind: str, hash_size: int) -> np.ndarray:
    return np.asarray(gray.resize(_small_size(kind, hash_size, gray.size), LANCZOS))


def _bits_from_small(stack: np.ndarray, kind: str, hash_size: int) -> np.ndarray:
    """(N, h, w) uint8 resized pixels of one size -> (N, nbits) bits, as imagehash computes them."""
    n = len(stack)
    if kind == "ahash":
        flat = stack.reshape(n, -1)
        # a sum of uint8 is exact in float64, so this equals numpy.mean per image
        avg = flat.sum(axis=1, dtype=np.float64) / flat.shape[1]
        return flat > avg[:, None]
    if kind == "dhash":
        return (stack[:, :, 1:] > stack[:, :, :-1]).reshape(n, -1)
    if kind == "phash":
        dct = scipy.fftpack.dct(scipy.fftpack.dct(stack.astype(np.float64), axis=1), axis=2)
        low = dct[:, :hash_size, :hash_size].reshape(n, -1)
        med = np.median(low, axis=1)
        return low > med[:, None]
    return _whash_bits(stack, hash_size)


def _whash_bits(stack: np.ndarray, hash_size: int) -> np.ndarray:
    import pywt

    n, scale = len(stack), stack.shape[1]
    ll_max_level = int(np.log2(scale))
    dwt_level = ll_max_level - int(np.log2(hash_size))
    out = np.empty((n, hash_size * hash_size), dtype=bool)
    for i in range(n):  # pywt over a batch axis rounds differently; per image stays identical
        pixels = stack[i] / 255.0
        coeffs = list(pywt.wavedec2(pixels, "haar", level=ll_max_level))
        coeffs[0] *= 0
        pixels = pywt.waverec2(coeffs, "haar")
        low = pywt.wavedec2(pixels, "haar", level=dwt_level)[0]
        out[i] = (low > np.median(low)).reshape(-1)
    return out


def _bits_from_smalls(smalls: Sequence[np.ndarray], kind: str, hash_size: int) -> np.ndarray:
    bits = np.zeros((len(smalls), n_bits(hash_size)), dtype=bool)
    by_shape: dict[tuple, list[int]] = {}
    for i, s in enumerate(smalls):
        by_shape.setdefault(s.shape, []).append(i)
    for idx in by_shape.values():
        bits[idx] = _bits_from_small(np.stack([smalls[i] for i in idx]), kind, hash_size)
    return bits


def _workers(workers: int | None) -> int:
    return max(1, workers if workers else (os.cpu_count() or 1))


@dataclass
class FileHashes:
    """Hashes of the files that decoded, and why the others did not."""
    paths: list[str]          # files hashed, in input order
    hashes: np.ndarray        # (len(paths), words) uint64
    index: np.ndarray         # position of each hashed file in the input list
    errors: list[tuple[str, str, str]]  # (path, reason, detail) for files skipped
    smalls: list | None = None  # the resized pixels the hashes came from (keep_smalls=True)


def shrink_images(imgs: Sequence[Image.Image], kind: str = "phash", hash_size: int = 8,
                  workers: int | None = None) -> list[np.ndarray]:
    """The gray pixels imagehash resizes each image to before its arithmetic (one per image)."""
    _check(kind, hash_size)

    def one(im):
        return _shrink(im.convert("L"), kind, hash_size)

    if not len(imgs):
        return []
    with ThreadPoolExecutor(_workers(workers)) as ex:
        return list(ex.map(one, imgs))


def hash_images(imgs: Sequence[Image.Image], kind: str = "phash", hash_size: int = 8,
                workers: int | None = None) -> np.ndarray:
    """Hashes of decoded PIL images: (N, words) uint64, equal to imagehash's bits."""
    _check(kind, hash_size)
    if not len(imgs):
        return np.zeros((0, n_words(hash_size)), dtype=np.uint64)
    return hash_smalls(shrink_images(imgs, kind, hash_size, workers), kind, hash_size)


def hash_smalls(smalls: Sequence[np.ndarray], kind: str = "phash", hash_size: int = 8) -> np.ndarray:
    """Hashes of already-resized pixels (from `shrink_images` or `hash_files(keep_smalls=True)`)."""
    if not len(smalls):
        return np.zeros((0, n_words(hash_size)), dtype=np.uint64)
    return pack_bits(_bits_from_smalls(smalls, kind, hash_size))


def hash_files(paths: Iterable[str | Path], kind: str = "phash", hash_size: int = 8, *,
               fast: bool = False, workers: int | None = None,
               max_pixels: int = images.DEFAULT_MAX_PIXELS,
               progress: Callable[[int], None] | None = None,
               keep_smalls: bool = False) -> FileHashes:
    """Decode and hash image files in parallel. Unreadable files are reported, not raised."""
    _check(kind, hash_size)
    paths = [str(p) for p in paths]
    draft = None
    if fast:
        w, h = _small_size(kind, hash_size, (2**30, 2**30)) if kind != "whash" else (0, 0)
        draft = (w * FAST_OVERSAMPLE, h * FAST_OVERSAMPLE) if kind != "whash" else None

    def one(path):
        try:
            gray = images.load_gray(path, draft=draft, max_pixels=max_pixels)
            return _shrink(gray, kind, hash_size), None
        except images.ImageRejected as e:
            return None, (e.reason, e.detail)

    def batch(start):
        return [one(p) for p in paths[start:start + FILES_PER_TASK]]

    smalls, ok_paths, index, errors = [], [], [], []
    with ThreadPoolExecutor(_workers(workers)) as ex:
        done = (r for part in ex.map(batch, range(0, len(paths), FILES_PER_TASK)) for r in part)
        for i, (path, (small, err)) in enumerate(zip(paths, done)):
            if err is None:
                smalls.append(small)
                ok_paths.append(path)
                index.append(i)
            else:
                errors.append((path, err[0], err[1]))
            if progress is not None:
                progress(1)
    hashes = hash_smalls(smalls, kind, hash_size)
    return FileHashes(ok_paths, hashes, np.asarray(index, dtype=np.int64), errors,
                      smalls if keep_smalls else None)


# --------------------------------------------------------------------------- Hamming search
def _as_words(h: np.ndarray) -> np.ndarray:
    h = np.asarray(h)
    if h.dtype != np.uint64:
        raise TypeError(f"packed hashes must be uint64, got {h.dtype}")
    if h.ndim == 1:  # a vector of 64-bit hashes
        h = h[:, None]
    if h.ndim != 2:
        raise ValueError(f"packed hashes must be (N, words), got shape {h.shape}")
    return np.ascontiguousarray(h)


def distance_block(q: np.ndarray, r: np.ndarray, scratch: dict | None = None) -> np.ndarray:
    """All Hamming distances between packed rows q (a, W) and r (b, W): (a, b) uint8/uint16.

    `scratch` (a dict kept per thread) lends reusable buffers: fresh multi-megabyte temporaries
    per chunk would cost page faults comparable to the arithmetic itself.
    """
    words = q.shape[1]
    shape = (len(q), len(r))
    dtype = np.uint8 if words * 64 < 256 else np.uint16
    x = _buffer(scratch, "xor", shape, np.uint64)
    if words == 1:
        np.bitwise_xor(q[:, 0, None], r[None, :, 0], out=x)
        return np.bitwise_count(x, out=_buffer(scratch, "dist", shape, np.uint8))
    acc = np.zeros(shape, dtype=dtype)
    c = _buffer(scratch, "count", shape, np.uint8)
    for w in range(words):
        np.bitwise_xor(q[:, w, None], r[None, :, w], out=x)
        acc += np.bitwise_count(x, out=c)
    return acc


def _buffer(scratch: dict | None, name: str, shape: tuple, dtype) -> np.ndarray:
    if scratch is None:
        return np.empty(shape, dtype=dtype)
    size = shape[0] * shape[1]
    buf = scratch.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = scratch[name] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def _rows_per_chunk(n_cols: int, max_bytes: int, workers: int, per_pair: int) -> int:
    """Query rows per chunk: about CHUNK_PAIRS pairs, so the temporaries stay in cache (a few MB;
    measured fastest), and never more than the memory bound allows."""
    budget = max(1, max_bytes // workers) // max(1, n_cols * per_pair)
    return int(max(1, min(budget, max(1, CHUNK_PAIRS // max(1, n_cols)))))


def _scratch(local: threading.local) -> dict:
    if not hasattr(local, "scratch"):
        local.scratch = {}
    return local.scratch


def _run_chunks(fn, n_rows: int, rows: int, workers: int):
    starts = list(range(0, n_rows, rows))
    if workers == 1 or len(starts) == 1:
        return [fn(s, min(s + rows, n_rows)) for s in starts]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda s: fn(s, min(s + rows, n_rows)), starts))


def knn(query: np.ndarray, ref: np.ndarray | None = None, k: int = 1, *,
        max_bytes: int = DEFAULT_MAX_BYTES, workers: int | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """k nearest reference rows of each query row: (indices, distances), both (n_query, k).

    With `ref=None` the search is within `query` itself and a row is not its own neighbour.
    Neighbours are ordered by distance, ties by index. Rows with fewer than k candidates get
    index -1 and distance -1 in the missing places.
    """
    q = _as_words(query)
    self_search = ref is None
    r = q if self_search else _as_words(ref)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"hash widths differ: {q.shape[1]} and {r.shape[1]} words")
    nq, nr = len(q), len(r)
    kk = min(k, nr - 1 if self_search else nr)
    idx_out = np.full((nq, k), -1, dtype=np.int64)
    dist_out = np.full((nq, k), -1, dtype=np.int32)
    if nq == 0 or kk <= 0:
        return idx_out, dist_out
    workers = _workers(workers)
    sentinel = q.shape[1] * 64 + 1
    rows = _rows_per_chunk(nr, max_bytes, workers, per_pair=10 if kk == 1 else 26)

    local = threading.local()

    def chunk(a, b):
        d = distance_block(q[a:b], r, _scratch(local))
        if self_search:
            d = d.astype(np.uint16) if d.dtype == np.uint8 and sentinel > 255 else d
            d[np.arange(b - a), np.arange(a, b)] = sentinel
        if kk == 1:
            i = d.argmin(axis=1)[:, None]
        else:
            # a unique key per pair (distance, then index) makes partition order deterministic
            key = d.astype(np.int64) * nr + np.arange(nr, dtype=np.int64)[None, :]
            part = np.argpartition(key, kk - 1, axis=1)[:, :kk]
            order = np.argsort(np.take_along_axis(key, part, axis=1), axis=1)
            i = np.take_along_axis(part, order, axis=1)
        idx_out[a:b, :kk] = i
        dist_out[a:b, :kk] = np.take_along_axis(d, i, axis=1)

    _run_chunks(chunk, nq, rows, workers)
    return idx_out, dist_out


def radius(query: np.ndarray, ref: np.ndarray | None = None, r: int = 10, *,
           max_bytes: int = DEFAULT_MAX_BYTES, workers: int | None = None,
           upper: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs within Hamming distance `r`: (query index, ref index, distance), sorted.

    With `ref=None` the search is within `query` and each unordered pair appears once (i < j).
    `upper=True`: query and ref hold the same items in two forms (e.g. flipped and plain hashes)
    and only pairs i < j are searched, half the work, for a form that is its own inverse.
    """
    q = _as_words(query)
    self_search = ref is None or upper
    rr = q if ref is None else _as_words(ref)
    if q.shape[1] != rr.shape[1]:
        raise ValueError(f"hash widths differ: {q.shape[1]} and {rr.shape[1]} words")
    if upper and len(q) != len(rr):
        raise ValueError("upper=True needs the same items in query and ref")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))
    if len(q) == 0 or len(rr) == 0 or r < 0:
        return empty
    workers = _workers(workers)
    rows = _rows_per_chunk(len(rr), max_bytes, workers, per_pair=11)

    local = threading.local()

    def chunk(a, b):
        lo = a if self_search else 0  # within one set only columns j >= a can pair with i >= a
        d = distance_block(q[a:b], rr[lo:], _scratch(local))
        if d.min() > r:  # the common case in sparse data, and a cheap test
            return empty
        # flatnonzero: np.nonzero on a 2-D mask is many times slower
        flat = np.flatnonzero(np.less_equal(d, r, out=_buffer(local.scratch, "mask", d.shape, bool)))
        ii, jj = np.divmod(flat, d.shape[1])
        dd = d.reshape(-1)[flat].astype(np.int32)
        ii = ii + a
        jj = jj + lo
        if self_search:
            keep = jj > ii
            ii, jj, dd = ii[keep], jj[keep], dd[keep]
        return ii.astype(np.int64), jj.astype(np.int64), dd

    parts = _run_chunks(chunk, len(q), rows, workers)
    if not parts:
        return empty
    ii = np.concatenate([p[0] for p in parts])
    jj = np.concatenate([p[1] for p in parts])
    dd = np.concatenate([p[2] for p in parts])
    return ii, jj, dd
