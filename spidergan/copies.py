"""Find copies of reference images in every form the GAN saw them: one engine for dedup,
`spidergan nearest` and evaluate's memorization metrics.

Two steps, both from the pixels a perceptual hash resizes an image to (`hashing.shrink_*`):

1. Shortlist by hash. Each query is hashed in every *form* training may have shown the reference
   in (x-flip with `train.mirror`; the 8 flips/90-degree rotations when ADA's geometric ops are
   on) and compared with the references' plain hash: the k nearest per form are candidates.
   A form's hash comes from the flipped/rotated hash input, so the plain form is imagehash's
   hash bit for bit and the others equal imagehash's hash of the flipped/rotated image up to the
   resampler's rounding.
2. Verify the shortlist by normalised correlation of low-resolution gray thumbnails, over the
   candidate's form and small crops, shifts and rescales (the ordinary edits a hash stops
   seeing: a 10% crop moves a 256-bit pHash about as far as an unrelated image). The central
   window of one image is compared with windows of the other at a grid of sizes and offsets and
   the other way round; the score is the best correlation, the *copy distance* is 1 - score
   (0 = identical up to brightness/contrast, about 1 = unrelated).

bench/copies.py measured this against the hash alone on planted copies (docs/memorization.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spidergan import hashing

# form name -> (x-flip first, quarter turns counter-clockwise after)
FORMS = {"plain": (False, 0), "flipped": (True, 0), "rot90": (False, 1), "rot180": (False, 2),
         "rot270": (False, 3), "flipped_rot90": (True, 1), "flipped_rot180": (True, 2),
         "flipped_rot270": (True, 3)}

THUMB = 32          # thumbnail side the verifier works on
VIEW = 12           # side of the sampled windows compared
COARSE = 6           # side of the coarse shortlist vectors (VIEW must be a multiple)
HIGHPASS = 4.0      # thumbnails lose their blur at this sigma: shared lighting is not a copy
CENTRE = 0.84       # the query's window: the central 84% (a 10% crop keeps it in view)
SIZES = (0.74, 0.84, 0.94)    # windows of the other image, relative side
OFFSETS = (-0.12, -0.06, 0.0, 0.06, 0.12)  # their centre's shift (ADA translates by <= 1/8)
DEFAULT_THRESHOLD = 0.14  # copy distance counted as a copy when nothing calibrated it (bench/copies.py: <= 1% false matches)
DEFAULT_SHORTLIST = 2


def forms_for(mirror: bool = True, rotations: bool = False) -> tuple[str, ...]:
    """The forms training shows an image in: x-flips with `mirror`, all 8 with 90-degree turns."""
    if rotations:
        return tuple(FORMS)
    return ("plain", "flipped") if mirror else ("plain",)


def apply_form(a: np.ndarray, form: str) -> np.ndarray:
    """`a` (..., h, w) seen in `form`."""
    flip, turns = FORMS[form]
    if flip:
        a = a[..., :, ::-1]
    return np.rot90(a, turns, axes=(-2, -1)) if turns else a


def inverse_form(form: str) -> str:
    """The form that undoes `form` (flips are their own inverse; a quarter turn is not)."""
    flip, turns = FORMS[form]
    if flip or turns % 2 == 0:
        return form
    return "rot270" if turns == 1 else "rot90"


@dataclass
class Signatures:
    """What the engine keeps per image: plain hash, hash per form, thumbnail."""
    hashes: np.ndarray        # (N, words) plain hashes (imagehash-compatible)
    form_hashes: np.ndarray   # (F, N, words): hash of each image in each form
    thumbs: np.ndarray        # (N, THUMB, THUMB) float32
    forms: tuple[str, ...]
    detail: np.ndarray = None  # (N,) fine-band energy relative to the thumbnail's (`thumbnails`)
    kind: str = "phash"
    hash_size: int = 16

    def __len__(self) -> int:
        return len(self.hashes)


def signatures_from_smalls(smalls: Sequence[np.ndarray], kind: str = "phash", hash_size: int = 16,
                           forms: Sequence[str] = ("plain", "flipped")) -> Signatures:
    forms = tuple(forms)
    if not forms or forms[0] != "plain":
        raise ValueError("forms must start with 'plain'")
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        raise ValueError(f"unknown forms {unknown}; choose from {', '.join(FORMS)}")
    words = hashing.n_words(hash_size)
    if not len(smalls):
        return Signatures(np.zeros((0, words), np.uint64), np.zeros((len(forms), 0, words), np.uint64),
                          np.zeros((0, THUMB, THUMB), np.float32), forms, np.zeros(0, np.float32),
                          kind, hash_size)
    stack = [np.asarray(s) for s in smalls]
    if any(FORMS[f][1] % 2 for f in forms) and any(s.shape[0] != s.shape[1] for s in stack):
        raise ValueError(f"{kind} resizes to a non-square grid: quarter-turn forms need "
                         f"phash, ahash or whash")
    plain = hashing.hash_smalls(stack, kind, hash_size)
    fh = [plain] + [hashing.hash_smalls([np.ascontiguousarray(apply_form(s, f)) for s in stack],
                                        kind, hash_size) for f in forms[1:]]
    thumbs, detail = thumbnails(stack)
    return Signatures(plain, np.stack(fh), thumbs, forms, detail, kind, hash_size)


def thumbnails(smalls: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """THUMB x THUMB high-passed gray thumbnails of hash inputs, and each one's *detail*: RMS of
    its finest band (under ~2 px) over RMS of the band the thumbnail keeps."""
    import cv2

    out = np.empty((len(smalls), THUMB, THUMB), np.float32)
    detail = np.empty(len(smalls), np.float32)
    for i, s in enumerate(smalls):
        raw = cv2.resize(np.asarray(s, np.float32), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
        t = cv2.GaussianBlur(raw, (0, 0), 0.7)  # windows are sampled at ~1.7 px steps
        # high-pass: unrelated photos share smooth light gradients that would correlate
        out[i] = t - cv2.GaussianBlur(t, (0, 0), HIGHPASS)
        fine = raw - cv2.GaussianBlur(raw, (0, 0), 1.0)
        detail[i] = np.sqrt(np.mean(fine ** 2)) / max(float(np.sqrt(np.mean(out[i] ** 2))), 1e-3)
    return out, detail


def signatures(items: Sequence, kind: str = "phash", hash_size: int = 16,
               forms: Sequence[str] = ("plain", "flipped"), workers: int | None = None,
               progress=None, fast: bool = False):
    """Signatures of paths (decoded via spidergan.images) or PIL images. `fast`: JPEGs decode
    at a reduced DCT scale (hashing.hash_files' fast path; the plain hash may then differ from
    imagehash's by a few bits, the copy distance hardly).

    Returns (signatures, positions of the items that decoded, [(item, reason, detail)] skipped)."""
    from PIL import Image

    items = list(items)
    if items and all(isinstance(i, Image.Image) for i in items):
        smalls = hashing.shrink_images(items, kind, hash_size, workers)
        return (signatures_from_smalls(smalls, kind, hash_size, forms),
                np.arange(len(items), dtype=np.int64), [])
    got = hashing.hash_files(items, kind, hash_size, workers=workers, progress=progress,
                             keep_smalls=True, fast=fast)
    return (signatures_from_smalls(got.smalls, kind, hash_size, forms), got.index,
            list(got.errors))


# --------------------------------------------------------------------------- verification
def _grid(size: float, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample coordinates (pixels of a THUMB image) of a VIEW x VIEW window."""
    step = size * THUMB / VIEW
    c = (np.arange(VIEW) + 0.5) * step - size * THUMB / 2  # relative to the window centre
    cx, cy = THUMB / 2 + dx * THUMB, THUMB / 2 + dy * THUMB
    return c + cx - 0.5, c + cy - 0.5


def _sample(thumbs: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples (N, len(ys), len(xs)) of thumbs at the grid xs x ys (edges clamped)."""
    def axis(v):
        v = np.clip(v, 0, THUMB - 1)
        lo = np.minimum(np.floor(v).astype(np.int64), THUMB - 2)
        return lo, (v - lo).astype(np.float32)

    x0, fx = axis(xs)
    y0, fy = axis(ys)
    top = thumbs[:, y0][:, :, x0] * (1 - fx) + thumbs[:, y0][:, :, x0 + 1] * fx
    bot = thumbs[:, y0 + 1][:, :, x0] * (1 - fx) + thumbs[:, y0 + 1][:, :, x0 + 1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


def _unit(v: np.ndarray, with_norm: bool = False):
    """Zero-mean, unit-norm rows (brightness and contrast drop out); flat rows stay 0.
    With `with_norm`, also each row's RMS contrast before normalising."""
    v = v.reshape(v.shape[0], -1) if v.ndim > 2 else v
    v = v - v.mean(axis=-1, keepdims=True)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    u = np.where(n > 1e-6, v / np.maximum(n, 1e-6), 0.0).astype(np.float32)
    return (u, (n[..., 0] / np.sqrt(v.shape[-1])).astype(np.float32)) if with_norm else u


_VIEWS = [(s, dx, dy) for s in SIZES for dx in OFFSETS for dy in OFFSETS]


def _weights(coords: np.ndarray) -> np.ndarray:
    """(len(coords), THUMB) bilinear weights: row i samples a THUMB line at coords[i], as `_sample`."""
    v = np.clip(coords, 0, THUMB - 1)
    lo = np.minimum(np.floor(v).astype(np.int64), THUMB - 2)
    f = v - lo
    w = np.zeros((len(coords), THUMB), np.float32)
    w[np.arange(len(coords)), lo] = 1 - f
    w[np.arange(len(coords)), lo + 1] += f
    return w


def centre_vectors(thumbs: np.ndarray, with_norm: bool = False):
    """(N, VIEW*VIEW) unit vectors of the central window (+ RMS contrast with `with_norm`)."""
    xs, ys = _grid(CENTRE, 0.0, 0.0)
    win = _weights(ys) @ thumbs @ _weights(xs).T
    return _unit(win.reshape(len(thumbs), VIEW * VIEW), with_norm)


def view_vectors(thumbs: np.ndarray, with_norm: bool = False):
    """(N, views, VIEW*VIEW) unit vectors of every window in the search grid (+ (N, views)
    RMS contrasts with `with_norm`). Separable sampling: rows of all windows of one size at
    once, then their columns (one matrix product each)."""
    n = len(thumbs)
    parts = []
    for size in SIZES:
        wy = np.concatenate([_weights(_grid(size, 0.0, dy)[1]) for dy in OFFSETS])   # (5*VIEW, T)
        wx = np.concatenate([_weights(_grid(size, dx, 0.0)[0]) for dx in OFFSETS])
        win = (wy @ thumbs @ wx.T).reshape(n, len(OFFSETS), VIEW, len(OFFSETS), VIEW)
        parts.append(win.transpose(0, 3, 1, 2, 4).reshape(n, -1, VIEW * VIEW))  # (size, dx, dy)
    u, norms = _unit(np.concatenate(parts, axis=1).reshape(-1, VIEW * VIEW), True)
    u, norms = u.reshape(n, len(_VIEWS), -1), norms.reshape(n, len(_VIEWS))
    return (u, norms) if with_norm else u


def contrast_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2ab / (a^2 + b^2) of two RMS contrasts: 1 when equal, 0.8 at a factor 2, 0.38 at 5.

    Correlation alone ignores contrast, so a faint blur matched any image with the same
    layout (an undertrained generator's blobs on white "copied" every centred spider)."""
    return 2 * a * b / np.maximum(a * a + b * b, 1e-12)


class _Cache:
    """Centre and window vectors (and their contrasts) per (image, form), made when first needed."""

    def __init__(self, thumbs: np.ndarray):
        self.thumbs = thumbs
        self.store: dict = {}

    def get(self, which: str, form: str, idx: np.ndarray):
        key = (which, form)
        if key not in self.store:
            n = len(self.thumbs)
            if which == "centre":
                self.store[key] = (np.zeros((n, VIEW * VIEW), np.float32), np.zeros(n, np.float32),
                                   np.zeros(n, bool))
            else:
                self.store[key] = (np.zeros((n, len(_VIEWS), VIEW * VIEW), np.float32),
                                   np.zeros((n, len(_VIEWS)), np.float32), np.zeros(n, bool))
        arr, norm, done = self.store[key]
        need = np.unique(idx[~done[idx]])
        if len(need):
            t = np.ascontiguousarray(apply_form(self.thumbs[need], form))
            arr[need], norm[need] = (centre_vectors(t, True) if which == "centre"
                                     else view_vectors(t, True))
            done[need] = True
        return arr[idx], norm[idx]


def verify(q: Signatures, r: Signatures, qi: np.ndarray, rj: np.ndarray, form: np.ndarray
           ) -> np.ndarray:
    """Copy distance of query qi[k] in form `q.forms[form[k]]` to reference rj[k]: 1 - the best
    correlation x contrast agreement over the window grid, both ways round."""
    qi, rj, form = (np.asarray(a, np.int64) for a in (qi, rj, form))
    out = np.full(len(qi), -1.0, np.float32)
    qc, rc = _Cache(q.thumbs), _Cache(r.thumbs)
    for f in np.unique(form):
        name = q.forms[int(f)]
        sel = np.flatnonzero(form == f)
        # the query's centre among the reference's windows (one matrix product per reference) ...
        order = sel[np.argsort(rj[sel], kind="stable")]
        refs, starts = np.unique(rj[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        views, vn = rc.get("views", "plain", refs)
        centres, cn = qc.get("centre", name, qi[order])
        for k in range(len(refs)):
            rows = slice(starts[k], ends[k])
            score = (centres[rows] @ views[k].T) * contrast_agreement(cn[rows, None], vn[k][None])
            out[order[rows]] = score.max(axis=1)
        # ... and the reference's centre among the query's windows: a crop either side
        order = sel[np.argsort(qi[sel], kind="stable")]
        qs_, starts = np.unique(qi[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        views, vn = qc.get("views", name, qs_)
        centres, cn = rc.get("centre", "plain", rj[order])
        for k in range(len(qs_)):
            rows = slice(starts[k], ends[k])
            score = (centres[rows] @ views[k].T) * contrast_agreement(cn[rows, None], vn[k][None])
            out[order[rows]] = np.maximum(out[order[rows]], score.max(axis=1))
    # a sharp photo and a blur of the same layout are not copies of each other
    out *= contrast_agreement(q.detail[qi], r.detail[rj])
    return 1.0 - out


FINE_SIZES = (0.70, 0.76, 0.82, 0.88, 0.94, 1.0)   # refinement: per axis (a crop squashes unevenly)
FINE_OFFSETS = (-0.12, -0.08, -0.04, 0.0, 0.04, 0.08, 0.12)
REFINE_BELOW = 0.3  # pairs between these after the coarse grid get the fine one: closer ones
REFINE_ABOVE = 0.1  # are copies at any threshold in use, farther ones unrelated


_FINE_W: list = []


def _fine_weights() -> np.ndarray:
    if not _FINE_W:  # the same for every image: made once
        _FINE_W.append(np.concatenate([_weights(_grid(sz, off, 0.0)[0])
                                       for sz in FINE_SIZES for off in FINE_OFFSETS]))
    return _FINE_W[0]


def fine_windows(thumb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All windows of the fine grid of one thumbnail, sizes chosen per axis: (W, VIEW*VIEW) unit
    vectors and (W,) RMS contrasts. Rows of every (size, offset) at once, then columns."""
    w = _fine_weights()
    k = len(FINE_SIZES) * len(FINE_OFFSETS)
    win = (w @ thumb @ w.T).reshape(k, VIEW, k, VIEW).transpose(0, 2, 1, 3).reshape(k * k, -1)
    return _unit(win, True)


def refine(q: Signatures, r: Signatures, qi: np.ndarray, rj: np.ndarray, form: np.ndarray
           ) -> np.ndarray:
    """The copy distance of each pair over the fine grid (sizes per axis, 4% steps): for the
    few pairs the coarse grid left close, where a crop's uneven squash or a shift between grid
    points costs correlation."""
    out = np.empty(len(qi), np.float32)
    cache: dict = {}

    def parts(side, k, f):
        key = (side, k, f)
        if key not in cache:
            t = np.ascontiguousarray(apply_form((q if side == "q" else r).thumbs[k], f))
            cache[key] = (centre_vectors(t[None], True), fine_windows(t))
        return cache[key]

    for n, (a, b, f) in enumerate(zip(np.asarray(qi).tolist(), np.asarray(rj).tolist(),
                                      np.asarray(form).tolist())):
        (cq, cqn), (vq, vqn) = parts("q", a, q.forms[f])
        (cr, crn), (vr, vrn) = parts("r", b, "plain")
        best = max(float(((vr @ cq[0]) * contrast_agreement(cqn[0], vrn)).max()),
                   float(((vq @ cr[0]) * contrast_agreement(crn[0], vqn)).max()))
        out[n] = 1.0 - best * float(contrast_agreement(q.detail[a], r.detail[b]))
    return out


def _refine_best(q, r, i, j, f, v, per_query: int = 2) -> np.ndarray:
    """v with the fine grid applied to each query's `per_query` closest candidates between
    REFINE_ABOVE and REFINE_BELOW."""
    v = v.copy()
    close = np.flatnonzero((v > REFINE_ABOVE) & (v < REFINE_BELOW))
    if not len(close):
        return v
    order = close[np.lexsort((v[close], i[close]))]
    rank = np.arange(len(order)) - np.searchsorted(i[order], i[order], side="left")
    pick = order[rank < per_query]
    v[pick] = np.minimum(v[pick], refine(q, r, i[pick], j[pick], f[pick]))
    return v


COARSE_SHIFTS = [(dx, dy) for dx in (-0.08, 0.0, 0.08) for dy in (-0.08, 0.0, 0.08)]


def coarse_vectors(thumbs: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """COARSE x COARSE unit vectors of the central window shifted by (dx, dy): a shortlist
    that a crop or shift moves less than it moves a hash."""
    import cv2

    xs, ys = _grid(CENTRE, dx, dy)
    xs, ys = xs.reshape(COARSE, -1).mean(1), ys.reshape(COARSE, -1).mean(1)
    blurred = np.stack([cv2.GaussianBlur(t, (0, 0), 1.2) for t in thumbs]) if len(thumbs) else thumbs
    return _unit(_weights(ys) @ blurred @ _weights(xs).T)


def coarse_knn(q: Signatures, r: Signatures, form: str, k: int, self_search: bool = False,
               max_floats: int = 2**24) -> np.ndarray:
    """k best references by coarse correlation (best of 9 shifts of the reference's window,
    up to 8% each way: ADA's integer translation moves content by up to 12.5%) for every
    query in `form`: (n, k) indices. Costs n_query x n_ref x 9 x COARSE^2 multiply-adds."""
    qv = coarse_vectors(np.ascontiguousarray(apply_form(q.thumbs, form)))
    rv = np.stack([coarse_vectors(r.thumbs, dx, dy) for dx, dy in COARSE_SHIFTS], axis=1)
    rv = rv.reshape(-1, rv.shape[-1])                     # (n_ref * shifts, d)
    k = min(k, len(r.thumbs))
    idx = np.empty((len(qv), k), np.int64)
    chunk = max(1, max_floats // max(1, len(rv)))
    for a in range(0, len(qv), chunk):
        sim = (qv[a:a + chunk] @ rv.T).reshape(-1, len(r.thumbs), len(COARSE_SHIFTS)).max(axis=2)
        if self_search:
            rows = np.arange(sim.shape[0])
            sim[rows, a + rows] = -np.inf
        idx[a:a + chunk] = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return idx


# --------------------------------------------------------------------------- search
@dataclass
class Matches:
    """Best verified reference per query."""
    index: np.ndarray          # (n,) reference position, -1 when there is none
    distance: np.ndarray       # (n,) copy distance (1 - correlation); 2.0 when there is none
    form: np.ndarray           # (n,) position in `forms` of the form that matched
    hash_distance: np.ndarray  # (n,) Hamming distance of that form's hash to the reference
    forms: tuple[str, ...]

    def form_names(self) -> list[str]:
        return [self.forms[int(f)] if f >= 0 else "" for f in self.form]


def candidates(q: Signatures, r: Signatures | None = None, shortlist: int = DEFAULT_SHORTLIST,
               radius: int | None = None, workers: int | None = None):
    """Shortlisted (query, reference, form, hash distance) arrays: the `shortlist` nearest
    references per query and form, or with `radius` every pair within that Hamming distance.
    With r=None the search is within q: pairs i < j, i in a form against j plain (both forms of
    an inverse pair are in `forms`, so j in form f against i is i in f's inverse against j)."""
    self_search = r is None
    ref = q if self_search else r
    if len(q) == 0 or len(ref) == 0:
        e = np.zeros(0, np.int64)
        return e, e, e, np.zeros(0, np.int32)
    parts = []
    for f in range(len(q.forms)):
        if radius is not None:
            if self_search and f == 0:
                i, j, d = hashing.radius(q.form_hashes[0], None, radius, workers=workers)
            elif self_search:
                # i < j only: (j in form f, i) is (i in f's inverse, j), searched with that form
                i, j, d = hashing.radius(q.form_hashes[f], ref.hashes, radius, workers=workers,
                                         upper=True)
            else:
                i, j, d = hashing.radius(q.form_hashes[f], ref.hashes, radius, workers=workers)
        else:
            k = shortlist + (1 if self_search else 0)
            idx, _ = hashing.knn(q.form_hashes[f], ref.hashes, k=k, workers=workers)
            idx = np.concatenate([idx, coarse_knn(q, ref, q.forms[f], shortlist, self_search)], axis=1)
            i = np.repeat(np.arange(len(q)), idx.shape[1])
            j = idx.reshape(-1)
            d = np.zeros(len(j), np.int32)
            ok = j >= 0
            d[ok] = np.bitwise_count(q.form_hashes[f][i[ok]] ^ ref.hashes[j[ok]]).sum(axis=1)
        keep = j >= 0
        if self_search:
            keep &= i != j
        parts.append((i[keep], j[keep], np.full(int(keep.sum()), f), d[keep]))
    i, j, f, d = (np.concatenate([p[k] for p in parts]) for k in range(4))
    inverse = np.array([q.forms.index(inverse_form(n)) if inverse_form(n) in q.forms else k
                         for k, n in enumerate(q.forms)], np.int64)
    if self_search:  # one orientation per unordered pair; (j, i) in form f is (i, j) in f's inverse
        swap = i > j
        i, j = np.where(swap, j, i), np.where(swap, i, j)
        f = np.where(swap, inverse[f], f)
    key = np.unique(np.stack([i, j, f], axis=1), axis=0, return_index=True)[1]
    return i[key], j[key], f[key], d[key].astype(np.int32)


def nearest(q: Signatures, r: Signatures, shortlist: int = DEFAULT_SHORTLIST,
            workers: int | None = None) -> Matches:
    """The best-verified reference for every query among its hash shortlist."""
    n = len(q)
    index = np.full(n, -1, np.int64)
    dist = np.full(n, 2.0, np.float32)
    form = np.full(n, -1, np.int64)
    hd = np.full(n, -1, np.int32)
    if n and len(r):
        i, j, f, d = candidates(q, r, shortlist, workers=workers)
        v = _refine_best(q, r, i, j, f, verify(q, r, i, j, f))
        # best per query: smallest copy distance, then smallest hash distance
        order = np.lexsort((d, v, i))
        first = np.unique(i[order], return_index=True)[1]
        best = order[first]
        qi = i[best]
        index[qi], dist[qi], form[qi], hd[qi] = j[best], v[best], f[best], d[best]
    return Matches(index, dist, form, hd, q.forms)


def self_pairs(s: Signatures, radius: int, shortlist: int = 0, workers: int | None = None):
    """Verified pairs within one set (dedup): shortlist = every pair within `radius` bits in
    some form, plus the `shortlist` nearest per image and form. Returns (i, j, form, hash
    distance, copy distance) with i < j, the best form per pair."""
    e = np.zeros(0, np.int64)
    i, j, f, d = (candidates(s, None, radius=radius, workers=workers) if radius >= 0
                  else (e, e, e, np.zeros(0, np.int32)))
    if shortlist:
        i2, j2, f2, d2 = candidates(s, None, shortlist=shortlist, workers=workers)
        i, j, f, d = (np.concatenate(a) for a in ((i, i2), (j, j2), (f, f2), (d, d2)))
    if not len(i):
        e = np.zeros(0, np.int64)
        return e, e, e, np.zeros(0, np.int32), np.zeros(0, np.float32)
    v = _refine_best(s, s, i, j, f, verify(s, s, i, j, f), per_query=len(s.forms) * 4)
    order = np.lexsort((d, v, j, i))
    first = order[np.unique(np.stack([i[order], j[order]], 1), axis=0, return_index=True)[1]]
    return i[first], j[first], f[first], d[first], v[first]


def self_nearest(s: Signatures, shortlist: int = DEFAULT_SHORTLIST, workers: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest other image (index, copy distance) per image of one set, among its shortlist."""
    n = len(s)
    idx = np.full(n, -1, np.int64)
    dist = np.full(n, 2.0, np.float32)
    i, j, f, _, v = self_pairs(s, radius=-1, shortlist=shortlist, workers=workers)
    for a, b in ((i, j), (j, i)):  # a pair serves both its images
        order = np.lexsort((v, a))
        first = order[np.unique(a[order], return_index=True)[1]]
        better = v[first] < dist[a[first]]
        dist[a[first][better]] = v[first][better]
        idx[a[first][better]] = b[first][better]
    return idx, dist
