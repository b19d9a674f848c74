"""Resampling images through batches of affine maps, for the geometric augmentations.

Two filters (`train.augment_filter`):

* "bilinear": one `grid_sample` at 1x. Cheap; a sub-pixel shift averages neighbours, which
  halves the gradient energy of edges (see docs/gpu.md for the figures).
* "antialias": the ADA paper's arrangement, written here from its description: 2x upsampling
  with the 12-tap Symlet-6 low-pass (zero insertion, then the filter), bilinear `grid_sample` on
  the 2x image, low-pass with the same filter and keep every second pixel. The sampler's
  blur then acts at twice the resolution, where the image has no content near the Nyquist
  frequency. About three times the cost of "bilinear" on CPU (bench/augment.py); the
  default on CUDA.

Both sample outside the image from its mirror image (symmetric about the pixel edges, as far
as needed), and both run in float32 whatever the autocast state: sample positions in bf16 are
up to ~2 px off at 512 px.

Coordinates: `theta` maps normalised output coordinates to normalised input coordinates
(`F.affine_grid`, align_corners=False: -1 and 1 are the outer pixel edges), the same for the
1x and 2x images, so one theta serves both.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

FILTERS = ("bilinear", "antialias")

# Symlet-6 decomposition low-pass (Daubechies' least-asymmetric wavelet with 6 vanishing
# moments), as published e.g. by PyWavelets: pywt.Wavelet("sym6").dec_lo. Sums to sqrt(2);
# tests/test_augment.py checks its orthogonality and vanishing moments.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057,
        -0.048311742585633, 0.4910559419267466, 0.787641141030194, 0.3379294217276218,
        -0.07263752278646252, -0.021060292512300564, 0.04472490177066578,
        0.0017677118642428036, -0.007800708325034148)
_TAPS = len(SYM6)  # 12
_PAD = 3  # 1x pixels of mirror padding the 2x upsampling needs on each side
_MARGIN = 6  # 2x pixels sampled beyond the output on each side for the 2x downsampling


def full_precision(device: torch.device):
    """A region where autocast is off (float32 maths), on the devices autocast knows."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def sampling_grid(theta: torch.Tensor, size) -> torch.Tensor:
    """`F.affine_grid` in float32, also under autocast."""
    with full_precision(theta.device):
        return F.affine_grid(theta.float(), list(size), align_corners=False)


def warp(x: torch.Tensor, theta: torch.Tensor, filter: str = "bilinear") -> torch.Tensor:
    """x [N, C, H, W] resampled through theta [N, 2, 3]; float32 inside, x's dtype out."""
    if filter not in FILTERS:
        raise ValueError(f"unknown augment filter {filter!r}; known: {', '.join(FILTERS)}")
    with full_precision(x.device):
        xf, th = x.float(), theta.float()
        if filter == "bilinear":
            out = F.grid_sample(xf, sampling_grid(th, xf.shape), mode="bilinear",
                                padding_mode="reflection", align_corners=False)
        else:
            out = _warp_antialias(xf, th)
    return out.to(x.dtype)


def _sym_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """Mirror padding about the pixel edges ("cba|abc|cba"), p <= the image's side."""
    x = torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], dim=-1)
    return torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], dim=-2)


def _filter_1d(x: torch.Tensor, taps: torch.Tensor, axis: int, stride: int = 1) -> torch.Tensor:
    """Depthwise correlation with `taps` along the last (axis=-1) or second-last axis, valid."""
    c = x.shape[1]
    k = taps.to(x.dtype)
    w = (k.reshape(1, 1, 1, -1) if axis == -1 else k.reshape(1, 1, -1, 1)).expand(c, 1, *(
        (1, len(k)) if axis == -1 else (len(k), 1)))
    s = (1, stride) if axis == -1 else (stride, 1)
    return F.conv2d(x, w, stride=s, groups=c)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling with the Symlet-6 low-pass: 2x pixel k lies at 1x position (k - 1/2) / 2."""
    n, c, h, w = x.shape
    f = torch.tensor(SYM6, device=x.device, dtype=torch.float64)
    f = (f / f.sum()).float()
    xp = _sym_pad(x, _PAD)
    z = xp.new_zeros(n, c, 2 * xp.shape[2], 2 * xp.shape[3])
    z[:, :, ::2, ::2] = xp
    # convolution with 2f (correlation with the flipped filter); the gain 2 per axis keeps
    # the mean, since half the samples of each polyphase component are zeros
    g = (2 * f).flip(0)
    z = _filter_1d(z, g, -1)[..., :2 * w]
    return _filter_1d(z, g, -2)[..., :2 * h, :]


def _downsample2x_valid(y: torch.Tensor) -> torch.Tensor:
    """Correlate with the Symlet-6 low-pass and keep every second pixel. `y` carries _MARGIN
    2x pixels beyond the output on each side; the result is aligned with upsample2x's inverse."""
    f = torch.tensor(SYM6, device=y.device, dtype=torch.float64)
    f = (f / f.sum()).float()
    y = _filter_1d(y[..., :, 1:], f, -1, stride=2)
    return _filter_1d(y[..., 1:, :], f, -2, stride=2)


def _delay() -> float:
    """Where the Symlet-6 filter's mass lies relative to its middle, in 1x pixels: Symlets are
    only nearly symmetric, so the 2x image sits this far off the nominal grid (and the
    downsampling moves it back)."""
    f = torch.tensor(SYM6, dtype=torch.float64)
    centre = float((torch.arange(_TAPS, dtype=torch.float64) * f).sum() / f.sum())
    return ((_TAPS - 1) / 2 - centre) / 2


_DELAY = _delay()


def _warp_antialias(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    up = upsample2x(x)
    # the up- and downsampling displace the image by +-_DELAY: conjugate the map by that
    # shift, so that rotations and scalings turn about the image centre as with "bilinear"
    d = torch.tensor([2 * _DELAY / w, 2 * _DELAY / h], device=x.device)
    th = theta.clone()
    th[:, :, 2] = theta[:, :, 2] + theta[:, :, :2] @ d - d
    # output grid at 2x, extended by _MARGIN 2x pixels per side: scale the output coordinates
    H2, W2 = 2 * h + 2 * _MARGIN, 2 * w + 2 * _MARGIN
    th[:, :, 0] = th[:, :, 0] * (W2 / (2 * w))
    th[:, :, 1] = th[:, :, 1] * (H2 / (2 * h))
    grid = sampling_grid(th, (n, c, H2, W2))
    y = F.grid_sample(up, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _downsample2x_valid(y)
