"""Is the generator copying? Two measures on top of nearest-training-image distances.

Both take distances in one space (cosine distance of Inception features when the weights are
present, otherwise perceptual-hash Hamming distance; `evaluate` records which in
`memorization_space`).

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
