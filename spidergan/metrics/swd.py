"""Sliced Wasserstein distance between two image sets over Laplacian-pyramid patches.

As in Karras et al. 2018 ("Progressive Growing of GANs", sec. 5 and appendix D): each image is
decomposed into a Laplacian pyramid from its full resolution down to 16x16; from every level,
7x7 neighbourhoods (descriptors of 7*7*3 values) are cut at random places, 128 per image. Per
level, each descriptor set is normalised per colour channel (mean and std over that set), and
the sliced Wasserstein distance between the two sets is the mean absolute difference of the
sorted projections on 512 random unit directions, averaged over 4 repeats. Reported x 1e3 per
level, and the mean over levels. Lower is closer; needs no network weights.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.outer(_BINOMIAL, _BINOMIAL)
    k = (k / k.sum()).to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, min_res: int = 16) -> list[torch.Tensor]:
    """Levels from full resolution down; the last level is the low-pass residual at min_res."""
    levels = []
    while x.shape[-1] > min_res:
        small = _blur(x)[:, :, ::2, ::2]
        up = F.interpolate(small, scale_factor=2, mode="nearest")
        levels.append(x - _blur(up))
        x = small
    levels.append(x)
    return levels


def _descriptors(level: torch.Tensor, per_image: int, size: int, gen: np.random.Generator):
    n, c, h, w = level.shape
    s = min(size, h)
    ys = gen.integers(0, h - s + 1, size=(n, per_image))
    xs = gen.integers(0, w - s + 1, size=(n, per_image))
    patches = level.unfold(2, s, 1).unfold(3, s, 1)  # n, c, h', w', s, s
    idx_n = np.repeat(np.arange(n), per_image)
    d = patches[idx_n, :, ys.reshape(-1), xs.reshape(-1)]  # N*per, c, s, s
    return d


def _normalise(d: torch.Tensor) -> torch.Tensor:
    mean = d.mean(dim=(0, 2, 3), keepdim=True)
    std = d.std(dim=(0, 2, 3), keepdim=True)
    return ((d - mean) / (std + 1e-8)).flatten(1)


def _swd(a: torch.Tensor, b: torch.Tensor, directions: int, repeats: int,
         gen: torch.Generator) -> float:
    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=gen, dtype=a.dtype)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        # [directions, N], contiguous along the sorted axis (sorting columns is ~10x slower)
        pa, _ = (dirs.t() @ a.t()).sort(dim=1)
        pb, _ = (dirs.t() @ b.t()).sort(dim=1)
        total += float((pa - pb).abs().mean())
    return total / repeats


@torch.no_grad()
def sliced_wasserstein(real: torch.Tensor, fake: torch.Tensor, seed: int = 0,
                       per_image: int = 128, patch: int = 7, directions: int = 512,
                       repeats: int = 4, min_res: int = 16,
                       max_descriptors: int | None = None) -> dict:
    """SWD x 1e3 per pyramid level and their mean. Images NCHW in [-1, 1], same size.

    The two sets are cut to the same number of images so the projections can be compared
    sorted against sorted. `max_descriptors` caps the descriptors per level and set (fewer per
    image) for a cheap training monitor; the paper's setting is None (128 per image).
    """
    n = min(len(real), len(fake))
    if n == 0:
        raise ValueError("need at least one image in each set")
    real = real[:n].detach().float().cpu()
    fake = fake[:n].detach().float().cpu()
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"image shapes differ: {tuple(real.shape[1:])} vs {tuple(fake.shape[1:])}")
    if max_descriptors:
        per_image = max(1, min(per_image, max_descriptors // n))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for lr, lf in zip(laplacian_pyramid(real, min_res), laplacian_pyramid(fake, min_res)):
        dr = _normalise(_descriptors(lr, per_image, patch, rng))
        df = _normalise(_descriptors(lf, per_image, patch, rng))
        out[f"swd{lr.shape[-1]}"] = _swd(dr, df, directions, repeats, gen) * 1e3
    out["swd"] = float(np.mean(list(out.values())))
    return out
