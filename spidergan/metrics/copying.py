"""Is the generator copying? Two measures on top of nearest-training-image distances.

All take distances in one space (cosine distance of Inception features when the weights are
present, otherwise the copy distance of spidergan.copies; `evaluate` names it in its notes).

* copy ratio: mean distance of generated images to their nearest training image, divided by the
  same mean for held-out real images (reals the generator never saw). A generator that draws
  new images from the training distribution sits as far from the training set as unseen reals
  do (ratio about 1); below 1 it is closer than fresh data would be, i.e. it copies.
* authenticity (Alaa et al. 2022, "How Faithful is your Synthetic Data?"): the share of fakes
  farther from their nearest training image than that training image is from its own nearest
  training neighbour. A fake inside that gap is more likely a copy of the training image than a
  new sample; 1 is best.
"""

from __future__ import annotations

import numpy as np

from spidergan.metrics import proportion


def copy_ratio(fake_nn_dist, holdout_nn_dist) -> float:
    """mean(fake -> nearest train) / mean(held-out real -> nearest train)."""
    f = np.asarray(fake_nn_dist, dtype=np.float64)
    h = np.asarray(holdout_nn_dist, dtype=np.float64)
    if len(f) == 0 or len(h) == 0:
        raise ValueError("copy_ratio needs generated and held-out images (dataset.holdout > 0)")
    ref = h.mean()
    if ref <= 0:
        raise ValueError("held-out reals coincide with training images (mean distance 0): "
                         "copy_ratio is undefined; the dataset has duplicates across the split")
    return float(f.mean() / ref)


def authenticity(fake_nn_index, fake_nn_dist, train_self_nn_dist) -> float:
    """Share of fakes with d(fake, t) > d(t, nearest other training image), t = nearest train."""
    idx = np.asarray(fake_nn_index, dtype=np.int64)
    d = np.asarray(fake_nn_dist, dtype=np.float64)
    t = np.asarray(train_self_nn_dist, dtype=np.float64)
    if len(d) == 0:
        raise ValueError("authenticity needs generated images")
    if len(t) < 2 or np.any(idx < 0):
        raise ValueError("authenticity needs at least 2 training images")
    return float(np.mean(d > t[idx]))


def self_nearest_cosine(x, chunk_rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Nearest other row (index, cosine distance) for every row of x: the training set's own gaps."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        raise ValueError("need at least 2 vectors for a nearest-other search")
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    idx = np.empty(len(x), np.int64)
    dist = np.empty(len(x), np.float64)
    for a in range(0, len(x), chunk_rows):
        sim = u[a:a + chunk_rows] @ u.T
        rows = np.arange(sim.shape[0])
        sim[rows, a + rows] = -np.inf
        i = sim.argmax(axis=1)
        idx[a:a + chunk_rows] = i
        dist[a:a + chunk_rows] = 1.0 - sim[rows, i]
    return idx, np.clip(dist, 0.0, 2.0)


# --------------------------------------------------------------------------- calibration
def calibrate_threshold(holdout_nn_dist, false_rate: float = 0.01, default: float = 0.15,
                        confidence: float = 0.95) -> dict:
    """The copy threshold that held-out reals (never trained on, so never copies) imply.

    threshold: just below the (k+1)-th smallest held-out distance, k = floor(false_rate * n):
    at most k of n held-out reals (share <= false_rate) would be called copies. With no held-out
    reals it is `default`. `false_copy_rate` is that share; `false_copy_rate_upper` its one-sided
    Clopper-Pearson bound at `confidence` (with 16 reals and none below, 0.171: few held-out
    reals calibrate loosely, and the figure says so)."""
    d = np.sort(np.asarray(holdout_nn_dist, dtype=np.float64))
    n = len(d)
    if n == 0:
        return {"threshold": float(default), "calibrated": 0, "n": 0, "false_copies": 0,
                "false_copy_rate": 0.0, "false_copy_rate_upper": 1.0}
    k = int(np.floor(false_rate * n))
    threshold = float(np.nextafter(d[k], -np.inf)) if k < n else float(d[-1])
    false = int(np.sum(d <= threshold))
    upper = proportion.upper_bound(false, n, confidence)
    return {"threshold": threshold, "calibrated": 1, "n": n, "false_copies": false,
            "false_copy_rate": false / n, "false_copy_rate_upper": upper}


# --------------------------------------------------------------------------- Meehan et al.
def mann_whitney_z(test_d, fake_d) -> float:
    """Z of the Mann-Whitney U of fakes' NN distances against test NN distances:
    U = #pairs with fake > test (+ 1/2 per tie), Z = (U - mn/2) / sqrt(mn(m+n+1)/12)."""
    t = np.asarray(test_d, dtype=np.float64)
    f = np.asarray(fake_d, dtype=np.float64)
    m, n = len(f), len(t)
    u = float(np.sum(f[:, None] > t[None, :]) + 0.5 * np.sum(f[:, None] == t[None, :]))
    return (u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12)


def data_copying_ct(train_x, test_x, fake_x, test_d, fake_d, cells: int = 5,
                    min_fakes: int = 20, seed: int = 0) -> dict:
    """C_T of Meehan, Chaudhuri and Dasgupta (AISTATS 2020), "A Non-Parametric Test to Detect
    Data-Copying in Generative Models".

    The training set is cut into `cells` k-means cells (in the feature space of `*_x`); held-out
    (test) reals and fakes fall into the cell of their nearest centre. Per cell, the Mann-Whitney
    Z of the fakes' nearest-training distances against the held-out reals' (`*_d`); C_T is the
    mean of those Z weighted by the cell's share of held-out reals, over the cells holding at
    least `min_fakes` fakes (and one held-out real). Strongly negative: fakes sit closer to
    training images than fresh reals do, i.e. copying; about 0: none; positive: underfitting.
    """
    from scipy.cluster.vq import kmeans2

    train_x = np.asarray(train_x, np.float64)
    test_x, fake_x = np.asarray(test_x, np.float64), np.asarray(fake_x, np.float64)
    test_d, fake_d = np.asarray(test_d, np.float64), np.asarray(fake_d, np.float64)
    k = max(1, min(cells, len(train_x)))
    if k == 1:
        centres = train_x.mean(axis=0, keepdims=True)
    else:
        centres, _ = kmeans2(train_x, k, minit="++", seed=seed)

    def cell(x):
        return ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(axis=1)

    tc, fc = cell(test_x), cell(fake_x)
    num = den = 0.0
    used = 0
    for c in range(len(centres)):
        t, f = test_d[tc == c], fake_d[fc == c]
        if len(f) < min_fakes or len(t) == 0:
            continue
        w = len(t) / len(test_d)
        num += w * mann_whitney_z(t, f)
        den += w
        used += 1
    if den == 0:
        raise ValueError(f"C_T: no cell holds >= {min_fakes} fakes and a held-out real "
                         f"(held-out reals: {len(test_d)}, fakes: {len(fake_d)})")
    return {"ct": float(num / den), "cells": int(len(centres)), "cells_used": used,
            "test_share_used": float(den)}
