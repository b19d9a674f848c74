"""The mask stage: cut the spider out of each crop so the GAN stops learning webs, leaves and bark.

Input: a crop manifest (the deduplicated one, `data/unique/manifest.jsonl`, whose `file`s are
relative to `data/crops/`). Output, `data/masked/`:

    images/<id>.png    the crop composited on `mask.background`
    alpha/<id>.png     its alpha mask (8-bit, 255 = spider)
    manifest.jsonl     the crop record carried forward, `file` pointing at the composite, plus
                       alpha, crop_file, mask_method, mask_model, mask_area, iou
    rejects.jsonl      crops dropped with a reason: unreadable, or a mask covering less than
                       `min_area` / more than `max_area` of the image (a blank or full mask
                       means the masker failed, and such a crop would teach the GAN nothing)

Three maskers (`mask.method`):

* `grabcut`: GrabCut (colour models + graph cut, our own cut for the terms OpenCV's lacks)
  seeded from the crop's known geometry: outside the detector box (mapped into the crop) is
  sure background; inside, colour models of that border and of the box's core label pixels
  spider or background; the cut adds a centre prior and a shadow model, and the result is
  refined per pixel (thin legs added back). Needs no weights (the default).
* `rembg`: any rembg model by name, or a local ONNX file through rembg's `u2net_custom` session.
  One session per run. Weights are never fetched at run time: a missing file fails at once
  with its name and the command that fetches it, and leaves no folder behind.
* `none`: pass-through (full alpha), the baseline the other two are measured against.

On the synthetic source, each crop's true mask (its ground-truth object cut with the crop's
square geometry) gives the mean mask IoU, written to the metrics file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from spidergan import atomic, images, manifest, params
from spidergan.crop import extract_square  # the one place that cuts squares
from spidergan.digest import file_sha256
from spidergan.params import GrabCutParams, MaskParams

log = logging.getLogger(__name__)

BACKGROUND_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
# rembg sessions that cannot run from a model name alone: custom ones need a file (use
# mask.model_path), sam needs point prompts, and remote ones send the image away.
_NOT_BY_NAME = {"u2net_custom", "dis_custom", "ben_custom", "sam"}


class MaskError(RuntimeError):
    """A mask configuration that cannot run (unknown model, missing file)."""


class MissingWeights(MaskError):
    """rembg weights absent from the local cache; never downloaded at run time."""

    def __init__(self, model: str, file: Path, url: str):
        self.model, self.file, self.url = model, Path(file), url
        self.command = f"mkdir -p {_show(self.file.parent)} && curl -L -o {_show(self.file)} {url}"
        super().__init__(
            f"rembg model {model!r} needs its weights file {_show(self.file)}, which is missing; "
            f"weights are never downloaded at run time. Fetch it once with:\n"
            f"    {self.command}\n"
            f"or choose mask.method: grabcut, which needs no weights.")


def _show(path: Path) -> str:
    """A path relative to the working directory when it lies inside it (shorter messages)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- rembg weights
def rembg_home() -> Path:
    """rembg's model home. env.setup() points U2NET_HOME inside the project's state folder."""
    from rembg.sessions.base import BaseSession

    return Path(BaseSession.rembg_home())


class _WouldFetch(Exception):
    def __init__(self, url: str, fname: str, path: str):
        super().__init__(url)
        self.url, self.fname, self.path = url, fname, path


def rembg_weights(model: str) -> Path:
    """The local weights file of rembg model `model`; MissingWeights when it is not there.

    rembg's own `download_models` is asked where the file lies, with `pooch.retrieve` swapped
    for a stub that reports what it would fetch (URL and file name come from rembg's source,
    so they follow its version) instead of touching the network. Folders rembg creates on the
    way are removed again when the file is missing.
    """
    import pooch
    from rembg.sessions import sessions

    cls = sessions.get(model)
    usable = sorted(n for n, c in sessions.items()
                    if n not in _NOT_BY_NAME and c.is_local() and not c.requires_credentials())
    if cls is None or model not in usable:
        why = "custom models load from a file: set mask.model_path" if model in _NOT_BY_NAME \
            else "it is not a local rembg model"
        raise MaskError(f"mask.model {model!r} cannot be used ({why}); "
                        f"choose one of: {', '.join(usable)}")

    def stub(url, known_hash=None, fname=None, path=None, **kw):
        raise _WouldFetch(url, fname or url.rsplit("/", 1)[-1], path or cls.model_dir())

    home = Path(cls.rembg_home())
    before = _folders(home)
    real = pooch.retrieve
    pooch.retrieve = stub
    try:
        found = cls.download_models()
    except _WouldFetch as w:
        raise MissingWeights(model, Path(w.path) / w.fname, w.url) from None
    finally:
        pooch.retrieve = real
        _remove_new_empty(home, before)
    return Path(found[0] if isinstance(found, (tuple, list)) else found)


def _folders(root: Path) -> set[Path]:
    return {Path(d) for d, _, _ in os.walk(root)} if root.exists() else set()


def _remove_new_empty(root: Path, before: set[Path]) -> None:
    for d in sorted(_folders(root) - before, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()  # only succeeds on empty folders
        except OSError:
            pass


def place_custom_model(path: str | Path) -> Path:
    """`path` as a file inside rembg's home (rembg refuses a model_path outside it).

    A file already inside is used as is; otherwise it is hard-linked (or, across file systems,
    copied) to `<home>/custom/<sha12>-<name>`, named by content so an edited file is re-placed.
    """
    src = Path(path).expanduser()
    if not src.is_file():
        raise MaskError(f"mask.model_path: no such file: {src}")
    # rembg compares absolute (not resolved) paths, so do the same
    home = Path(os.path.abspath(rembg_home()))
    if os.path.abspath(src).startswith(str(home) + os.sep):
        return Path(os.path.abspath(src))
    dst = home / "custom" / f"{file_sha256(src)[:12]}-{src.name}"
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        try:
            try:
                os.link(src, tmp)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    return dst


def open_rembg_session(p: MaskParams):
    """One rembg session for the run (loading the network is the expensive part)."""
    from rembg import new_session

    if p.model_path:
        return new_session("u2net_custom", model_path=str(place_custom_model(p.model_path)))
    rembg_weights(p.model)
    return new_session(p.model)


# --------------------------------------------------------------------------- maskers
class Masker:
    """Turns one RGB crop (and its record) into an alpha mask (uint8 HxW, 255 = spider)."""

    name = "base"
    model: Optional[str] = None

    def __call__(self, img: Image.Image, record: dict) -> tuple[np.ndarray, Optional[Image.Image]]:
        """(alpha, foreground colours or None for the crop itself)."""
        raise NotImplementedError


class NoMasker(Masker):
    name = "none"

    def __call__(self, img, record):
        return np.full((img.height, img.width), 255, np.uint8), None


class RembgMasker(Masker):
    name = "rembg"

    def __init__(self, p: MaskParams, session=None):
        self.p = p
        self.session = session if session is not None else open_rembg_session(p)
        self.model = Path(p.model_path).name if p.model_path else p.model

    def __call__(self, img, record):
        from rembg import remove

        p = self.p
        if not p.alpha_matting:
            m = remove(img, session=self.session, only_mask=True, post_process_mask=p.post_process)
            return np.asarray(m.convert("L"), np.uint8).copy(), None
        # matting unmixes the edge colours too; its RGB is the foreground to composite
        cut = remove(img, session=self.session, alpha_matting=True,
                     alpha_matting_foreground_threshold=p.alpha_matting_foreground_threshold,
                     alpha_matting_background_threshold=p.alpha_matting_background_threshold,
                     alpha_matting_erode_size=p.alpha_matting_erode_size,
                     post_process_mask=p.post_process).convert("RGBA")
        return np.asarray(cut.getchannel("A"), np.uint8).copy(), cut.convert("RGB")


class GrabCutMasker(Masker):
    name = "grabcut"

    def __init__(self, gp: GrabCutParams):
        self.gp = gp

    def __call__(self, img, record):
        rect = seed_rect(record, img.size, self.gp)
        return grabcut_alpha(img, rect, self.gp), None


def make_masker(p: MaskParams) -> Masker:
    if p.method == "none":
        return NoMasker()
    if p.method == "grabcut":
        return GrabCutMasker(p.grabcut)
    return RembgMasker(p)


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


# --------------------------------------------------------------------------- compositing
def composite(img: Image.Image, alpha: np.ndarray, background: str, *, fg: Image.Image | None = None,
              blur_radius: float = 12.0, noise_seed: int = 0) -> Image.Image:
    """`fg` (default: the crop) over `background` through `alpha`."""
    a = (alpha.astype(np.float32) / 255.0)[:, :, None]
    front = np.asarray(fg if fg is not None else img, np.float32)
    if background in BACKGROUND_COLOURS:
        back = np.broadcast_to(np.array(BACKGROUND_COLOURS[background], np.float32), front.shape)
    elif background == "blur":
        back = np.asarray(img.filter(ImageFilter.GaussianBlur(blur_radius)), np.float32)
    elif background == "noise":
        rng = np.random.default_rng(noise_seed)
        back = rng.integers(0, 256, front.shape, dtype=np.uint8).astype(np.float32)
    else:
        raise MaskError(f"unknown mask.background {background!r}")
    out = front * a + back * (1.0 - a)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def _noise_seed(seed: int, crop_id: str) -> int:
    """Per-crop noise that does not change when other crops come or go."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{crop_id}".encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- ground truth
class TruthMasks:
    """True masks of crops on the synthetic source: the crop's object cut like the crop."""

    def __init__(self, raw_root: str | Path):
        self.root = Path(raw_root)
        self.records = manifest.read_by_id(self.root / "truth.jsonl")
        self._cached: tuple[str, np.ndarray] | None = None

    def __bool__(self) -> bool:
        return bool(self.records)

    def mask(self, record: dict, size: tuple[int, int]) -> Optional[np.ndarray]:
        """Boolean HxW true mask for the crop, or None when it has no ground-truth object."""
        label = record.get("truth_label")
        truth = self.records.get(record.get("image_id"))
        if label is None or truth is None or record.get("box") is None:
            return None
        if self._cached is None or self._cached[0] != truth["id"]:
            with Image.open(self.root / truth["mask"]) as im:  # our own label map, not untrusted
                self._cached = (truth["id"], np.asarray(im.convert("L")).copy())
        obj = Image.fromarray((self._cached[1] == int(label)).astype(np.uint8) * 255, "L")
        cut = extract_square(obj, record["box"], int(record.get("size") or size[0]),
                             pad="constant", resample=Image.Resampling.NEAREST)
        if cut.size != size:
            cut = cut.resize(size, Image.Resampling.NEAREST)
        return np.asarray(cut.convert("L")) >= 128


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


# --------------------------------------------------------------------------- contact sheet
def contact_sheet(rows: list[tuple[Image.Image, Image.Image, Image.Image]], thumb: int = 128,
                  gap: int = 4) -> Image.Image:
    """(original, mask, composite) triplets side by side, laid out in a roughly square grid."""
    n = max(1, len(rows))
    cols = max(1, round(math.sqrt(n / 3)))
    nrows = math.ceil(n / cols)
    cell = thumb + gap
    sheet = Image.new("RGB", (cols * (3 * cell + gap) + gap, nrows * cell + gap), (60, 60, 60))
    for i, row in enumerate(rows):
        x0 = gap + (i // nrows) * (3 * cell + gap)
        for j, im in enumerate(row):
            t = im.convert("RGB").resize((thumb, thumb), Image.Resampling.BILINEAR)
            sheet.paste(t, (x0 + j * cell, gap + (i % nrows) * cell))
    return sheet


# --------------------------------------------------------------------------- the stage
def _fingerprint(p: MaskParams, seed: int, manifest_path: Path) -> dict:
    """What the outputs depend on: a different one means start over rather than resume."""
    digest = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    return {"params": params.to_dict(p), "seed": seed, "input_sha256": digest}


def run(p: MaskParams, *, seed: int, manifest_path: str | Path, images_root: str | Path,
        out: str | Path = "data/masked", raw_root: str | Path | None = "data/raw",
        metrics_path: str | Path | None = "metrics/mask.json",
        plots_dir: str | Path | None = "plots/mask", masker: Masker | None = None) -> dict:
    """Mask every crop of `manifest_path` (files relative to `images_root`) into `out`.

    Resumable: crops already in `out`'s manifest or rejects are skipped, unless the params
    changed since (then it starts over). Returns the metrics (also written to `metrics_path`).
    """
    out, images_root, manifest_path = Path(out), Path(images_root), Path(manifest_path)
    if not manifest_path.exists():
        raise MaskError(f"input manifest not found: {manifest_path}")
    records = manifest.read(manifest_path)
    masker = masker or make_masker(p)  # fails here, before any output, on missing weights
    out.mkdir(parents=True, exist_ok=True)
    state = out / ".params.json"
    fp = _fingerprint(p, seed, manifest_path)
    if not state.exists() or json.loads(state.read_text()) != fp:
        for name in ("manifest.jsonl", "rejects.jsonl"):
            (out / name).unlink(missing_ok=True)
        atomic.write_json(state, fp)
    done = {r["id"] for r in manifest.iter_records(out / "manifest.jsonl")
            if (out / r["file"]).exists() and (out / r["alpha"]).exists()}
    done |= {r["id"] for r in manifest.iter_records(out / "rejects.jsonl")}
    truth = TruthMasks(raw_root) if raw_root else None
    check_area = p.method != "none"  # pass-through is full by definition
    t0, n_new = time.perf_counter(), 0
    with manifest.Appender(out / "manifest.jsonl") as man, \
            manifest.Appender(out / "rejects.jsonl") as rej:
        for rec in tqdm(records, desc=f"mask {masker.name}", unit="crop"):
            cid = rec["id"]
            if cid in done:
                continue
            n_new += 1
            try:
                img = images.load_rgb(images_root / rec["file"])
            except images.ImageRejected as e:
                rej.append({"id": cid, "reason": e.reason, "detail": e.detail,
                            "image_id": rec.get("image_id")})
                continue
            try:
                alpha, fg = masker(img, rec)
            except Exception as e:  # one bad crop must not end a long run
                if isinstance(e, MaskError):
                    raise
                log.warning("masking %s failed: %s", cid, e)
                rej.append({"id": cid, "reason": "mask_failed", "detail": f"{type(e).__name__}: {e}",
                            "image_id": rec.get("image_id")})
                continue
            binary = alpha >= round(p.threshold * 255)
            area = float(binary.mean())
            gt = truth.mask(rec, img.size) if truth else None
            score = round(iou(binary, gt), 4) if gt is not None else None
            extra = {"image_id": rec.get("image_id"), "mask_area": round(area, 4), "iou": score}
            if check_area and area < p.min_area:
                rej.append({"id": cid, "reason": "mask_too_small",
                            "detail": f"mask covers {area:.3f} < min_area {p.min_area}", **extra})
                continue
            if check_area and area > p.max_area:
                rej.append({"id": cid, "reason": "mask_too_large",
                            "detail": f"mask covers {area:.3f} > max_area {p.max_area}", **extra})
                continue
            comp = composite(img, alpha, p.background, fg=fg, blur_radius=p.blur_radius,
                             noise_seed=_noise_seed(seed, cid))
            rel, arel = f"images/{cid}.png", f"alpha/{cid}.png"
            atomic.save_image(out / arel, Image.fromarray(alpha, "L"))
            atomic.save_image(out / rel, comp)
            man.append({**rec, "file": rel, "alpha": arel, "crop_file": rec["file"],
                        "mask_method": masker.name, "mask_model": masker.model, **extra})
    seconds = time.perf_counter() - t0
    log.info("masked %d crops in %.1fs", n_new, seconds)
    # rewrite in input order: resumed runs append out of order, and DVC hashes the file
    order = {r["id"]: i for i, r in enumerate(records)}
    for name in ("manifest.jsonl", "rejects.jsonl"):
        rows = manifest.read_by_id(out / name).values()
        manifest.write(out / name, sorted(rows, key=lambda r: order.get(r["id"], len(order))))
    metrics = _metrics(p, masker, records, out)
    if metrics_path:
        atomic.write_json(metrics_path, metrics)
    if plots_dir:
        _write_sheet(p, out, images_root, Path(plots_dir))
    from spidergan import outcome

    reasons = metrics["rejected_by_reason"]
    if not metrics["kept"]:
        outcome.refuse_empty("mask", f"no masked crops of {len(records)}",
                             reasons if records else None,
                             "mask.min_area / mask.max_area" if records else "no crops to mask")
    outcome.summary("mask", f"{metrics['kept']} masked crops of {len(records)} ({masker.name})",
                    reasons)
    return metrics


def _metrics(p: MaskParams, masker: Masker, records: list[dict], out: Path) -> dict:
    kept = manifest.read(out / "manifest.jsonl")
    rejects = manifest.read(out / "rejects.jsonl")
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    m = {"method": masker.name, "input": len(records), "kept": len(kept), "rejected": len(rejects),
         "rejected_by_reason": dict(sorted(reasons.items())),
         "mask_area_mean": round(float(np.mean([r["mask_area"] for r in kept])), 4) if kept else 0.0}
    if masker.model:
        m["model"] = masker.model
    # IoU over every crop that got a mask, dropped ones included: dropping is not a free pass
    scored = [r["iou"] for r in kept + rejects if r.get("iou") is not None]
    if scored:
        kept_scores = [r["iou"] for r in kept if r.get("iou") is not None]
        m.update({"iou_mean": round(float(np.mean(scored)), 4),
                  "iou_median": round(float(np.median(scored)), 4),
                  "iou_p10": round(float(np.percentile(scored, 10)), 4),
                  "iou_n": len(scored),
                  "iou_mean_kept": round(float(np.mean(kept_scores)), 4) if kept_scores else 0.0})
    return m


def _write_sheet(p: MaskParams, out: Path, images_root: Path, plots_dir: Path) -> None:
    rows = []
    for r in manifest.read(out / "manifest.jsonl")[:p.sheet_count]:
        try:
            orig = images.load_rgb(images_root / r["crop_file"])
        except images.ImageRejected:
            continue
        with Image.open(out / r["alpha"]) as a, Image.open(out / r["file"]) as c:
            rows.append((orig, a.convert("L").copy(), c.convert("RGB").copy()))
    atomic.save_image(plots_dir / "contact_sheet.png", contact_sheet(rows))
