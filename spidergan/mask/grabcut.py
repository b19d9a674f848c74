"""GrabCut seeded from the crop's known geometry, with our own graph cut (scipy max-flow) for the
terms OpenCV's lacks (smoothness below 50, a centre prior, a shadow model), then a per-pixel
refinement that adds thin legs back. docs/mask.md records the choices and their measured IoU."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from spidergan.mask.base import Masker
from spidergan.params import GrabCutParams


class GrabCutMasker(Masker):
    name = "grabcut"

    def __init__(self, gp: GrabCutParams):
        self.gp = gp

    def __call__(self, img, record):
        rect = seed_rect(record, img.size, self.gp)
        return grabcut_alpha(img, rect, self.gp), None


def seed_rect(record: dict, size: tuple[int, int], gp: GrabCutParams) -> tuple[int, int, int, int]:
    """The region seeded "probably spider", in crop pixels (x0, y0, x1, y1).

    With `box` (the crop's square in source pixels) and `det_box` in the record, the detector
    box is mapped into the crop and grown by `box_pad`; otherwise the crop minus a `margin` band
    (the crop stage centres the spider inside its margin). At least one pixel stays outside on
    every side, since GrabCut needs some sure background.
    """
    w, h = size
    box, det = record.get("box"), record.get("det_box")
    if box and det and box[2] > box[0] and box[3] > box[1]:
        sx, sy = w / (box[2] - box[0]), h / (box[3] - box[1])
        pad = gp.box_pad
        r = [(det[0] - box[0]) * sx - pad * w, (det[1] - box[1]) * sy - pad * h,
             (det[2] - box[0]) * sx + pad * w, (det[3] - box[1]) * sy + pad * h]
    else:
        r = [gp.margin * w, gp.margin * h, (1 - gp.margin) * w, (1 - gp.margin) * h]
    x0, y0 = int(np.clip(round(r[0]), 1, w - 2)), int(np.clip(round(r[1]), 1, h - 2))
    x1, y1 = int(np.clip(round(r[2]), x0 + 1, w - 1)), int(np.clip(round(r[3]), y0 + 1, h - 1))
    return x0, y0, x1, y1


def grabcut_alpha(img: Image.Image, rect: tuple[int, int, int, int],
                  gp: GrabCutParams) -> np.ndarray:
    """GrabCut inside `rect` (crop pixels) at `work_size` side; soft alpha at the crop's size.

    Seeding: everything outside `rect` is sure background. A colour model of that border and
    one of the core disc (its `core_share` least border-like pixels) label the box: pixels
    `seed_llr` more likely spider than border start as spider, the rest as background, and
    core pixels that clear `seed_llr` are sure spider. A rectangle of "probably spider"
    instead lets the background inside the box (~90% of it, for a thin-legged spider) train
    the spider model.

    Then `iterations` GrabCut rounds: fit a colour model (GMM) to each side's pixels, then
    label every pixel by a minimum graph cut of colour log-likelihood ratio + centre prior +
    contrast-sensitive smoothness (`smoothness`). The cut is our own (scipy's max-flow):
    OpenCV's grabCut fixes the smoothness weight at 50, which fills the gaps between legs and
    cuts legs 1-3 px wide, and it takes no prior. The two extra terms:

    * centre prior: a tight detector box around a radially built animal is spider at its
      centre and mostly background towards its sides (+`centre_prior` log-odds at the centre,
      falling linearly to 0 at `centre_prior_radius`, 1 = the box's side midpoints);
    * shadows: every object casts one, darker than, but of the hue of, what lies under it; the
      border's colours darkened by the `shadow` factors form a second background model
      (handicapped by `shadow_penalty`, since dark spiders look like deep shadow).

    With `refine`, the final models then decide per pixel (background = either side's model,
    the border's or the shadow model), and thin (black-/top-hat) spider-coloured structures
    touching the mask are added back.
    """
    import cv2

    w, h = img.size
    scale = gp.work_size / max(w, h)  # upscaling helps too: legs grow wider than the
    # boundary they cost under the smoothness term
    ww, wh = max(8, round(w * scale)), max(8, round(h * scale))
    small = img.resize((ww, wh), Image.Resampling.BILINEAR) if (ww, wh) != (w, h) else img
    rgb = np.ascontiguousarray(np.asarray(small, np.uint8))
    feat = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB) if gp.colour == "lab" else rgb[:, :, ::-1].copy()
    sx, sy = ww / w, wh / h
    x0, y0 = int(np.clip(round(rect[0] * sx), 1, ww - 2)), int(np.clip(round(rect[1] * sy), 1, wh - 2))
    x1 = int(np.clip(round(rect[2] * sx), x0 + 1, ww - 1))
    y1 = int(np.clip(round(rect[3] * sy), y0 + 1, wh - 1))
    inside = np.zeros((wh, ww), bool)
    inside[y0:y1, x0:x1] = True
    side = max(x1 - x0, y1 - y0)
    # a spider's body sits near the centre of its leg span: the core disc anchors the spider
    # colour model (thin-legged spiders cover ~10% of their box)
    cx, cy, r = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, gp.core * side
    yy, xx = np.mgrid[0:wh, 0:ww]
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r) & inside
    X = feat.reshape(-1, 3).astype(np.float64)
    cv2.setRNGSeed(0)  # k-means starts: same crop, same mask, in any order
    outside = ~inside
    border = _Gmm.fit(X[outside.ravel()])
    border_ll = border.loglik(X).reshape(wh, ww)
    shadow_ll = np.full((wh, ww), -np.inf)
    if gp.shadow:
        under = rgb.reshape(-1, 3)[outside.ravel()]
        dark = np.concatenate([_darken(under, k) for k in gp.shadow])[None]
        dark = cv2.cvtColor(dark, cv2.COLOR_RGB2LAB) if gp.colour == "lab" else dark[:, :, ::-1]
        shadow_ll = (_Gmm.fit(dark.reshape(-1, 3).astype(np.float64)).loglik(X).reshape(wh, ww)
                     - gp.shadow_penalty)
    fg = inside.copy()
    sure = np.zeros_like(disc)
    seeds = np.zeros_like(disc)
    if disc.any():
        train = disc & (border_ll <= np.percentile(border_ll[disc], 100 * gp.core_share))
        llr = _Gmm.fit(X[train.ravel()]).loglik(X).reshape(wh, ww) - border_ll
        fg &= llr >= gp.seed_llr
        seeds = train & (llr >= gp.seed_llr)
        # the core looks like the border: the cut still needs sure spider, so trust the geometry
        # there, but let refine overrule it (a blank crop must come out empty, not as a disc)
        sure = seeds if seeds.sum() >= 0.2 * train.sum() else train
        fg |= sure
    if gp.cut == "opencv":
        fg, fg_ll, bg_ll = _opencv_grabcut(feat, X, inside, fg, sure, gp.iterations)
    else:
        # normalised (elliptic) distance from the box centre: 1 at the side midpoints
        rr = np.hypot((xx - cx) / max(1.0, (x1 - x0) / 2), (yy - cy) / max(1.0, (y1 - y0) / 2))
        prior = gp.centre_prior * (1.0 - rr / gp.centre_prior_radius)
        grid = _Grid(feat, gp.smoothness)
        fgm = bgm = None
        for _ in range(gp.iterations):
            fgm = _Gmm.fit(X[fg.ravel()]) if fgm is None else fgm.refit(X[fg.ravel()])
            bgm = _Gmm.fit(X[~fg.ravel()]) if bgm is None else bgm.refit(X[~fg.ravel()])
            fg_ll, bg_ll = fgm.loglik(X).reshape(wh, ww), bgm.loglik(X).reshape(wh, ww)
            fg = grid.cut(fg_ll - np.maximum(bg_ll, shadow_ll) + prior, outside, sure)
    if gp.refine:
        # background by either side's final model, the border's or the shadows': the
        # background model drifts away from whatever the spider side took in
        llr = fg_ll - np.maximum(np.maximum(bg_ll, border_ll), shadow_ll)
        spider = llr > 1e-3  # ties (a blank crop, where both models agree) go to background
        kept = fg & (spider | seeds)
        if gp.rim:  # edge pixels mix both colours: give back the cut's rim around what stays
            el = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gp.rim + 1, 2 * gp.rim + 1))
            kept |= fg & cv2.dilate(kept.astype(np.uint8), el).astype(bool)
        fg = kept
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        k = max(3, int(round(gp.thin_size * side)) | 1)
        el = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        hat = np.maximum(cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, el),
                         cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, el))
        thin = inside & spider & (hat > gp.thin_contrast)
        fg = _touching(fg | thin, fg)
    fg = _drop_specks(fg.astype(np.uint8), gp.min_component)
    if gp.median:
        fg = cv2.medianBlur(fg * 255, gp.median) // 255
    soft = Image.fromarray(fg * 255, "L")
    if (ww, wh) != (w, h):
        soft = soft.resize((w, h), Image.Resampling.BILINEAR)
    if gp.feather > 0:
        # the feather softens the edge for compositing but must not decide what is spider: a
        # blur would fade legs 1-2 px wide below half alpha
        spider = np.asarray(soft) >= 128
        blurred = np.asarray(soft.filter(ImageFilter.GaussianBlur(gp.feather)))
        return np.where(spider, np.maximum(blurred, 128), np.minimum(blurred, 127)).astype(np.uint8)
    return np.asarray(soft, np.uint8).copy()


def _opencv_grabcut(feat: np.ndarray, X: np.ndarray, inside: np.ndarray, fg: np.ndarray,
                    sure: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's own grabCut from the same seeds (`grabcut.cut: opencv`): its smoothness is fixed
    (50) and it takes no prior, so `smoothness` and `centre_prior` do not apply. Returns the
    labels and the per-pixel log-likelihoods of its final spider and background models."""
    import cv2

    gc = np.full(fg.shape, cv2.GC_BGD, np.uint8)
    gc[inside] = cv2.GC_PR_BGD
    gc[fg & inside] = cv2.GC_PR_FGD
    gc[sure] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(feat, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    out = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    return (out, _Gmm.from_grabcut(fgd).loglik(X).reshape(fg.shape),
            _Gmm.from_grabcut(bgd).loglik(X).reshape(fg.shape))


class _Gmm:
    """A full-covariance Gaussian mixture over pixel colours (float64 N x 3)."""

    def __init__(self, weights, means, covs):
        covs = np.asarray(covs, np.float64) + np.eye(3) * 1e-2  # flat regions: singular
        self.parts = [(math.log(wt), mu, np.linalg.inv(c), math.log(np.linalg.det(c)))
                      for wt, mu, c in zip(weights, means, covs) if wt > 0]

    @classmethod
    def fit(cls, x: np.ndarray, k: int = 5) -> "_Gmm":
        """k-means then one Gaussian per cluster, as GrabCut initialises its own models."""
        x = x.astype(np.float32)
        if len(x) < 4 * k:  # too few pixels for k clusters: one broad Gaussian
            cov = np.cov(x.T) if len(x) > 1 else np.zeros((3, 3))
            return cls([1.0], [x.mean(0) if len(x) else np.zeros(3)], [cov + np.eye(3) * 10.0])
        import cv2

        _, labels, _ = cv2.kmeans(x, k, None, (cv2.TERM_CRITERIA_MAX_ITER, 10, 0), 1,
                                  cv2.KMEANS_PP_CENTERS)
        labels = labels.ravel()
        return cls._from_parts([x[labels == j].astype(np.float64) for j in range(k)], len(x), 2)

    @classmethod
    def _from_parts(cls, parts: list[np.ndarray], n: int, least: int) -> "_Gmm":
        """One Gaussian per group of pixels (of `n` in all) holding at least `least` of them."""
        parts = [p for p in parts if len(p) >= least]
        return cls([len(p) / n for p in parts], [p.mean(0) for p in parts],
                   [np.cov(p.T) + np.eye(3) for p in parts])

    @classmethod
    def from_grabcut(cls, model: np.ndarray, k: int = 5) -> "_Gmm":
        """OpenCV's grabCut model array: k weights, k x 3 means, k x 3x3 covariances."""
        m = model.ravel()
        return cls(m[:k], m[k:4 * k].reshape(k, 3), m[4 * k:].reshape(k, 3, 3))

    def refit(self, x: np.ndarray) -> "_Gmm":
        """GrabCut's model update: each pixel to its likeliest component, then re-estimate."""
        if len(x) < 20:
            return _Gmm.fit(x)
        part = np.argmax(self._terms(x), axis=0)
        return _Gmm._from_parts([x[part == j] for j in range(len(self.parts))], len(x), 4)

    def _terms(self, x: np.ndarray) -> np.ndarray:
        """Per component: log(weight * density) of each row of x, but for the shared constant."""
        out = np.empty((len(self.parts), len(x)))
        for j, (lw, mu, inv, logdet) in enumerate(self.parts):
            d = x - mu
            out[j] = lw - 0.5 * (np.einsum("ij,ij->i", d @ inv, d) + logdet)
        return out

    def loglik(self, x: np.ndarray) -> np.ndarray:
        t = self._terms(x)
        top = t.max(0)
        return top + np.log(np.exp(t - top).sum(0))


class _Grid:
    """The 8-neighbour pixel graph of an image with GrabCut's contrast-sensitive weights
    (gamma / distance * exp(-beta |colour difference|^2), beta from the mean difference), and
    its minimum cut under per-pixel log-odds (scipy's max-flow)."""

    def __init__(self, feat: np.ndarray, gamma: float):
        h, w = feat.shape[:2]
        f = feat.astype(np.float32)
        idx = np.arange(h * w).reshape(h, w)
        whole, head, tail = slice(None), slice(0, -1), slice(1, None)
        a, b, d2, dist = [], [], [], []
        for (sa, sb), dd in (((whole, head), (whole, tail)), 1.0), (((head, whole), (tail, whole)), 1.0), \
                            (((head, head), (tail, tail)), math.sqrt(2)), (((head, tail), (tail, head)), math.sqrt(2)):
            a.append(idx[sa].ravel())
            b.append(idx[sb].ravel())
            d2.append(((f[sa] - f[sb]) ** 2).sum(-1).ravel())
            dist.append(np.full(a[-1].size, dd))
        self.a, self.b = np.concatenate(a), np.concatenate(b)
        d2 = np.concatenate(d2)
        beta = 1.0 / (2.0 * float(d2.mean()) + 1e-6)
        self.w = gamma / np.concatenate(dist) * np.exp(-beta * d2)
        self.n = h * w
        # a pixel's neighbours weigh at most this together: log-odds beyond it decide alone, so
        # costs clipped there leave the cut unchanged (and integer capacities small)
        self.cap = gamma * (4 + 4 / math.sqrt(2)) + 1.0

    def cut(self, logodds: np.ndarray, sure_bg: np.ndarray, sure_fg: np.ndarray) -> np.ndarray:
        """Labels (bool, True = spider) minimising the sum of |log-odds| over pixels labelled
        against their sign + the weights of neighbour pairs labelled apart."""
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import breadth_first_order, maximum_flow

        lo = logodds.ravel().astype(np.float64)
        free = ~sure_bg.ravel()
        cost_fg, cost_bg = np.maximum(-lo, 0.0), np.maximum(lo, 0.0)
        # sure background is no node: its edges charge a free neighbour labelled spider
        fa, fb = free[self.a], free[self.b]
        np.add.at(cost_fg, self.a[fa & ~fb], self.w[fa & ~fb])
        np.add.at(cost_fg, self.b[fb & ~fa], self.w[fb & ~fa])
        cost_fg, cost_bg = np.minimum(cost_fg, self.cap), np.minimum(cost_bg, self.cap)
        sure = sure_fg.ravel()
        cost_fg[sure], cost_bg[sure] = 0.0, self.cap  # more than all its neighbours: never cut
        both = fa & fb
        nf = int(free.sum())
        node = np.full(self.n, -1, np.int64)
        node[free] = np.arange(nf)
        src, snk = nf, nf + 1
        ids = np.arange(nf)
        pa, pb, pw = node[self.a[both]], node[self.b[both]], self.w[both]
        rows = np.concatenate([np.full(nf, src), ids, pa, pb])
        cols = np.concatenate([ids, np.full(nf, snk), pb, pa])
        caps = np.concatenate([cost_bg[free], cost_fg[free], pw, pw])
        # integer capacities (max-flow wants them) at up to 1/64 nat, the total flow in int32
        scale = min(64.0, 2.0 ** 30 / max(1.0, nf * self.cap))
        caps = np.round(caps * scale).astype(np.int32)
        keep = caps > 0
        graph = csr_matrix((caps[keep], (rows[keep], cols[keep])), shape=(nf + 2, nf + 2))
        flow = maximum_flow(graph, src, snk, method="dinic").flow
        residual = graph - flow  # what can still flow; the source's side of the cut is spider
        residual.data = (residual.data > 0).astype(np.int32)
        residual.eliminate_zeros()
        reach = breadth_first_order(residual, src, directed=True, return_predecessors=False)
        side = np.zeros(nf + 2, bool)
        side[reach] = True
        out = np.zeros(self.n, bool)
        out[free] = side[:nf]
        return out.reshape(logodds.shape)


def _darken(rgb: np.ndarray, light: float) -> np.ndarray:
    """sRGB colours (N x 3 uint8) with only `light` of their light left: in shadow."""
    lin = (rgb.astype(np.float32) / 255.0) ** 2.2 * light
    return np.clip(lin ** (1 / 2.2) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _touching(cand: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """The 8-connected blobs of `cand` that contain an `anchor` pixel (bool HxW)."""
    import cv2

    n, labels = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[anchor & cand])] = True
    keep[0] = False
    return keep[labels]


def _drop_specks(fg: np.ndarray, min_share: float) -> np.ndarray:
    """Keep foreground blobs at least `min_share` of the largest (8-connected: thin legs)."""
    import cv2

    if min_share <= 0 or not fg.any():
        return fg
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, bool)
    keep[1:] = areas >= min_share * areas.max()
    return keep[labels].astype(np.uint8)
