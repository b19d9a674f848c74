"""Synthetic spider photographs with exact ground truth: the offline default source.

Every image is drawn procedurally from `(seed, index)` alone, so a run is bit-for-bit
reproducible and a larger `count` extends the same set. An image is built like a macro photo:

    textured surface (bark, leaf litter, green leaf, soil, stone, plaster) or a far, defocused
    background -> depth of field -> optional orb web -> per object: soft shadow, then the
    object (spider legs drawn supersampled, bodies shaded per pixel) -> light falloff,
    vignetting, white balance, tone curve, sensor noise, softness or sharpening -> JPEG.

Item i uses only `np.random.default_rng([seed, i])` (plus fixed noise tiles made once from a
constant seed); which items are originals and which are their duplicates is planned per block
of 16 indices from `(seed, block)`, and a duplicate re-renders (or reuses) its original.

Ground truth per image: a label map (0 background, k = object k), one record per object with
class and tight box (x1/y1 exclusive, legs included), and duplicate groups: some images get
planted near-duplicates (re-encoded, rescaled, cropped/shifted, brightness changed) whose masks
and boxes are transformed with them.

Speed matters (every other stage tests on this source): everything is whole-array numpy/cv2
work, textures are low-resolution noise upsampled, and per-pixel shading runs only inside the
small patches around objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np

from spidergan.params import SyntheticParams

SPIDER, CATERPILLAR, LEAF = "spider", "caterpillar", "leaf"
SMALL_SIDE = 80          # a spider whose box side is below this is "too small to crop"
_BLOCK = 16              # duplicates are planned per block of this many consecutive indices
_MASK_ALPHA = 0.25       # coverage above which a pixel belongs to an object's mask


# =========================================================================== public types
@dataclass
class SyntheticObject:
    cls: str
    box: list            # [x0, y0, x1, y1] floats, x1/y1 exclusive
    label: int

    def to_json(self) -> dict:
        return {"cls": self.cls, "box": [float(v) for v in self.box], "label": int(self.label)}


@dataclass
class SyntheticImage:
    id: str
    index: int
    jpeg: bytes
    size: tuple           # (width, height)
    mask: np.ndarray      # uint8 HxW label map
    objects: list         # list[SyntheticObject]
    dup_group: str | None = None
    dup_of: str | None = None
    kind: dict = field(default_factory=dict)   # what was drawn (background, flags) for humans

    def objects_json(self) -> list[dict]:
        return [o.to_json() for o in self.objects]


def image_id(index: int) -> str:
    return f"syn-{index:05d}"


def dup_group_id(orig_index: int) -> str:
    return f"dup-{orig_index:05d}"


# =========================================================================== noise helpers
_TILE = 1024
_planes: np.ndarray | None = None
_sensor: np.ndarray | None = None
_grain: np.ndarray | None = None
_hair: np.ndarray | None = None


def _tiles():
    """Fixed blocks of Gaussian noise reused at random offsets (the offsets come from the
    item's rng, so items stay functions of (seed, index)): drawing fresh per-pixel noise for
    every image would cost more than the rest of the image."""
    global _planes, _sensor, _grain, _hair
    if _planes is None:
        r = np.random.default_rng(0x5EED)
        _planes = r.standard_normal((3, _TILE, _TILE), dtype=np.float32)
        lum = r.standard_normal((_TILE, _TILE, 1), dtype=np.float32)
        chroma = r.standard_normal((_TILE, _TILE, 3), dtype=np.float32)
        # sensor noise is mostly luminance, with some colour speckle
        _sensor = np.ascontiguousarray(lum * 0.85 + chroma * 0.4)
        _grain = cv2.GaussianBlur(_planes[2], (0, 0), 0.8) * 2.0   # ~unit variance, fine fibres
        # streaks along x: lying hairs, rotated onto each spider's body axis when used
        h = cv2.GaussianBlur(_planes[1], (0, 0), sigmaX=3.0, sigmaY=0.6)
        _hair = h * np.float32(1 / h.std())
    return _planes, _sensor, _grain


def _window(rng: np.random.Generator, arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """A random h x w window of a tile (wrapped when larger than the tile)."""
    if h > arr.shape[0] or w > arr.shape[1]:
        reps = (-(-h // arr.shape[0]), -(-w // arr.shape[1])) + (1,) * (arr.ndim - 2)
        arr = np.tile(arr, reps)
    y = int(rng.integers(0, arr.shape[0] - h + 1))
    x = int(rng.integers(0, arr.shape[1] - w + 1))
    return arr[y:y + h, x:x + w]


def _noise(rng, h, w) -> np.ndarray:
    planes = _tiles()[0]
    return _window(rng, planes[int(rng.integers(0, 2))], h, w)


def _grain_noise(rng, h, w) -> np.ndarray:
    return _window(rng, _tiles()[2], h, w)


def _hair_noise(rng, h: int, w: int, angle: float, scale: float = 1.0) -> np.ndarray:
    """Streaky noise whose streaks run along `angle` (radians, image coordinates), with
    streak length multiplied by `scale` (supersampled patches want longer streaks)."""
    _tiles()
    d = int(math.ceil(math.hypot(h, w) / scale)) + 4
    src = _window(rng, _hair, d, d)
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    # dst -> src map: rotate by -angle so a streak along `angle` samples the tile's x-axis
    M = np.float32([[c, s, d / 2 - c * w / 2 - s * h / 2], [-s, c, d / 2 + s * w / 2 - c * h / 2]])
    return cv2.warpAffine(np.ascontiguousarray(src), M, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _fbm(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 4,
         gain: float = 0.5, aspect: float = 1.0) -> np.ndarray:
    """Fractal value noise, roughly unit variance. `cell`: size of the coarsest features in
    pixels; `aspect` > 1 stretches them horizontally, < 1 vertically."""
    gh = max(2, int(round(h / cell)))
    gw = max(2, int(round(w / (cell * aspect))))
    a = _noise(rng, gh, gw)
    amp, total = 1.0, 1.0
    for _ in range(octaves - 1):
        gh, gw = gh * 2, gw * 2
        if gh > h // 2 or gw > w // 2:
            break
        amp *= gain
        total += amp * amp
        a = cv2.resize(a, (gw, gh), interpolation=cv2.INTER_CUBIC)
        a += np.float32(amp) * _noise(rng, gh, gw)
    a = cv2.resize(a, (w, h), interpolation=cv2.INTER_CUBIC)
    a *= np.float32(1.0 / math.sqrt(total))
    return a


def _gray3(g: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(g, np.float32), cv2.COLOR_GRAY2RGB)


def _mul(img: np.ndarray, g: np.ndarray) -> None:
    """img *= g per pixel, in place (numpy broadcasting over the colour axis is slow)."""
    img *= _gray3(g)


def _blend_col(img: np.ndarray, col, w: np.ndarray) -> None:
    """img += (col - img) * w, in place."""
    w = np.ascontiguousarray(w, np.float32)
    img -= img * _gray3(w)
    img += cv2.merge([w * np.float32(c) for c in col])


def _blend_img(img: np.ndarray, other: np.ndarray, w: np.ndarray) -> None:
    """img += (other - img) * w, in place."""
    d = other - img
    d *= _gray3(w)
    img += d


def _relief(height: np.ndarray, light: np.ndarray, k: float) -> np.ndarray:
    """Directional shading of a height map (the emboss that makes a texture look lit)."""
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3)
    s = gx * (-light[0] * k) + gy * (-light[1] * k)
    s += 1.0
    return s


def _lerp3(a, b, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two RGB colours by t (HxW) -> HxWx3 float32."""
    a = np.asarray(a, np.float32)
    d = np.asarray(b, np.float32) - a
    t = np.asarray(t, np.float32)
    if t.ndim == 2 and t.size > 4096 and a.ndim == 1 and d.ndim == 1:
        return cv2.merge([t * d[c] + a[c] for c in range(3)])
    return a + t[..., None] * d


def _smooth(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _jitter(rng, rgb, amount=0.12, bright=(0.8, 1.2)):
    c = np.asarray(rgb, np.float32) * rng.uniform(1 - amount, 1 + amount, 3) * rng.uniform(*bright)
    return np.clip(c, 0.0, 1.0).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; large radii are done at reduced resolution (same look, a fraction of
    the cost)."""
    if sigma < 0.3:
        return img
    if sigma < 2.0:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    f = max(2, min(8, int(sigma / 1.2)))
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# =========================================================================== backgrounds
def _detail(rng, h, w, amount: float) -> np.ndarray:
    """Pixel-scale roughness (1 + amount * fine noise): what makes a surface in focus look
    sharp rather than painted."""
    g = _grain_noise(rng, h, w) * np.float32(amount)
    g += 1.0
    return g


def _bg_bark(rng, h, w, light):
    """Furrowed bark: raised plates split by deep, dark, mostly vertical furrows, with
    cross-cracks, rough plate surfaces and lichen."""
    vertical = rng.random() < 0.9
    if not vertical:
        h, w = w, h
        light = light[[1, 0, 2]]
    stretch = rng.uniform(0.08, 0.25)
    n2 = _fbm(rng, h, w, rng.uniform(6, 14), octaves=3, aspect=0.6)
    # plates are the regions where n1 is above a level; below it, deep fissures whose width
    # varies along their length (regions, not lines, or the bark reads as an engraving)
    if rng.random() < 0.65:
        # a connected network of long fissures along the zero crossings of the stretched
        # noise, wide and flat-bottomed where the noise changes slowly
        smooth_field = _fbm(rng, h, w, rng.uniform(25, 60), octaves=2, gain=0.35, aspect=stretch)
        smooth_field += n2 * np.float32(0.05)
        wdt = rng.uniform(0.2, 0.4)
        plate = _smooth(np.abs(smooth_field), wdt * 0.45, wdt * 1.2)
    else:
        n1 = _fbm(rng, h, w, rng.uniform(30, 70), octaves=4, gain=0.5, aspect=stretch)
        n3 = _fbm(rng, h, w, rng.uniform(15, 30), octaves=3, aspect=1 / stretch * 0.5)
        field = n1 + n3 * np.float32(0.15) + n2 * np.float32(0.08)
        level = rng.uniform(-0.9, -0.3)
        plate = _smooth(field, level - 0.12, level + 0.25)
    height = plate * np.float32(1.2) + np.float32(0.3) * n2
    shade = _relief(height, light, rng.uniform(0.4, 0.7))
    shade *= np.float32(0.25) + np.float32(0.75) * plate                              # fissures in shadow
    shade *= _detail(rng, h, w, rng.uniform(0.1, 0.2))
    dark = _jitter(rng, [(0.12, 0.08, 0.05), (0.1, 0.09, 0.08), (0.15, 0.1, 0.06)][rng.integers(3)], 0.05)
    lite = _jitter(rng, [(0.42, 0.36, 0.29), (0.38, 0.35, 0.31), (0.5, 0.45, 0.38), (0.45, 0.34, 0.24)][rng.integers(4)], 0.05)
    img = _lerp3(dark, lite, np.clip(plate * np.float32(0.8) + np.float32(0.12) * n2 + np.float32(0.1), 0, 1))
    if rng.random() < 0.6:   # lichen / moss on the plates
        lich = _smooth(_fbm(rng, h, w, rng.uniform(30, 80), octaves=4), 0.5, 1.1) * plate
        col = _jitter(rng, [(0.55, 0.6, 0.45), (0.3, 0.38, 0.14), (0.65, 0.66, 0.58)][rng.integers(3)])
        _blend_col(img, col, lich * np.float32(rng.uniform(0.5, 0.9)))
    _mul(img, shade)
    if not vertical:
        img = np.ascontiguousarray(img.transpose(1, 0, 2))
    return img


_LEAF_POLY = None


def _leaf_poly() -> np.ndarray:
    global _LEAF_POLY
    if _LEAF_POLY is None:
        s = np.linspace(-1, 1, 13)
        wdt = (1 - s ** 2) ** 0.75 * (1 + 0.25 * s)
        _LEAF_POLY = np.concatenate([np.stack([s, wdt], 1), np.stack([s[::-1], -wdt[::-1]], 1)]).astype(np.float32)
    return _LEAF_POLY


def _bg_litter(rng, h, w, light):
    """Dry leaf litter: overlapping leaves, each tilted (own brightness), with veins, curled
    darker rims, mottling, and shadows cast only onto the leaves below."""
    f = 2
    hh, ww = h // f, w // f
    canvas = np.empty((hh, ww, 3), np.uint8)
    canvas[:] = _u8(_jitter(rng, (0.09, 0.06, 0.04)))
    tilt = np.full((hh, ww), 0.8, np.float32)
    shadow = np.zeros((hh, ww), np.float32)
    size = rng.uniform(55, 110) / f
    n = int(hh * ww / (size * size) * 1.7) + 4
    palette = [(0.55, 0.36, 0.18), (0.42, 0.26, 0.13), (0.65, 0.5, 0.3), (0.35, 0.3, 0.18),
               (0.5, 0.45, 0.25), (0.3, 0.2, 0.12), (0.6, 0.55, 0.4), (0.4, 0.42, 0.2),
               (0.7, 0.45, 0.15)]
    poly = _leaf_poly()
    sh = np.array([-light[0], -light[1]]) / max(0.3, float(light[2])) * size * 0.12
    cols = np.asarray(palette, np.float64)[rng.integers(len(palette), size=n)]
    cols *= rng.uniform(0.85, 1.15, (n, 3)) * rng.uniform(0.6, 1.1, (n, 1))
    cols = np.clip(cols, 0, 1)
    for _ in range(n):
        cx, cy = rng.uniform(-size, ww + size), rng.uniform(-size, hh + size)
        a = size * rng.uniform(0.6, 1.4)
        b = a * rng.uniform(0.3, 0.55)
        ang = rng.uniform(0, 2 * math.pi)
        ca, sa = math.cos(ang), math.sin(ang)
        pts = poly * [a, b]
        pts = np.stack([pts[:, 0] * ca - pts[:, 1] * sa + cx, pts[:, 0] * sa + pts[:, 1] * ca + cy], 1)
        ip = [np.round(pts * 16).astype(np.int32)]
        col = cols[_]
        cv2.fillPoly(shadow, [np.round((pts + sh) * 16).astype(np.int32)], 1.0, cv2.LINE_8, 4)
        cv2.fillPoly(shadow, ip, 0.0, cv2.LINE_8, 4)
        cv2.fillPoly(tilt, ip, float(rng.uniform(0.65, 1.2)), cv2.LINE_8, 4)
        cv2.fillPoly(canvas, ip, _u8(col), cv2.LINE_AA, 4)
        cv2.polylines(canvas, ip, True, _u8(col * 0.6), 1, cv2.LINE_AA, 4)
        # midrib and a few side veins, lighter than the blade
        vc = _u8(np.minimum(col * 1.25 + 0.04, 1))
        p0 = (cx - ca * a, cy - sa * a)
        cv2.line(canvas, (int(p0[0] * 16), int(p0[1] * 16)), (int((cx + ca * a * 0.9) * 16), int((cy + sa * a * 0.9) * 16)),
                 vc, 1, cv2.LINE_AA, 4)
        if a > 12:
            for k in (-1.2, 0.0, 1.2):
                u = k / 3.2
                bx, by = cx + ca * a * u, cy + sa * a * u
                for side in (-1, 1):
                    va = ang + side * 0.9
                    ln = b * 0.8 * (1 - u * u) ** 0.5
                    cv2.line(canvas, (int(bx * 16), int(by * 16)),
                             (int((bx + math.cos(va) * ln) * 16), int((by + math.sin(va) * ln) * 16)),
                             vc, 1, cv2.LINE_AA, 4)
    img = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) * np.float32(1 / 255)
    shadow = cv2.resize(cv2.GaussianBlur(shadow, (0, 0), 1.2), (w, h), interpolation=cv2.INTER_LINEAR)
    tilt = cv2.resize(cv2.GaussianBlur(tilt, (0, 0), 0.7), (w, h), interpolation=cv2.INTER_LINEAR)
    g = tilt * (1 - np.float32(0.6) * shadow)
    g *= 1 + np.float32(0.18) * _fbm(rng, h, w, rng.uniform(8, 20), octaves=3)
    g *= _detail(rng, h, w, 0.08)
    _mul(img, g)
    spots = _smooth(_fbm(rng, h, w, rng.uniform(6, 15), octaves=3), 1.0, 1.8)
    _blend_col(img, (0.12, 0.08, 0.05), spots * np.float32(0.7))
    return img


def _bg_soil(rng, h, w, light):
    n1 = _fbm(rng, h, w, rng.uniform(60, 140), octaves=4)
    n2 = _fbm(rng, h, w, rng.uniform(3, 8), octaves=3)
    height = np.zeros((h, w), np.float32)
    cols = np.zeros((h, w, 3), np.float32)
    pmask = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(5, 60))):
        r = rng.uniform(2, 14)
        c = (int(rng.uniform(0, w) * 16), int(rng.uniform(0, h) * 16))
        axes = (int(r * 16), int(r * rng.uniform(0.5, 1.0) * 16))
        ang = rng.uniform(0, 180)
        cv2.ellipse(height, c, axes, ang, 0, 360, float(r * 0.25), -1, cv2.LINE_8, 4)
        g = rng.uniform(0.15, 0.45)
        cv2.ellipse(cols, c, axes, ang, 0, 360, tuple(float(v) for v in _jitter(rng, (g, g * 0.9, g * 0.8))),
                    -1, cv2.LINE_8, 4)
        cv2.ellipse(pmask, c, axes, ang, 0, 360, 1.0, -1, cv2.LINE_8, 4)
    height = cv2.GaussianBlur(height, (0, 0), 2.0) + 0.6 * n2 + 0.8 * n1
    dark = _jitter(rng, [(0.2, 0.13, 0.08), (0.28, 0.2, 0.13), (0.15, 0.12, 0.1)][rng.integers(3)])
    lite = dark * rng.uniform(1.6, 2.4)
    img = _lerp3(dark, lite, np.clip(0.5 + 0.25 * n1 + 0.15 * n2, 0, 1))
    _blend_img(img, cols, cv2.GaussianBlur(pmask, (0, 0), 0.8))
    _mul(img, _relief(height, light, 0.35) * _detail(rng, h, w, rng.uniform(0.08, 0.16)))
    return img


def _bg_stone(rng, h, w, light):
    n1 = _fbm(rng, h, w, rng.uniform(60, 160), octaves=5, gain=0.55)
    n2 = _fbm(rng, h, w, rng.uniform(4, 10), octaves=3)
    g = rng.uniform(0.3, 0.6)
    base = _jitter(rng, (g, g * rng.uniform(0.92, 1.0), g * rng.uniform(0.85, 1.0)), 0.05)
    sp = _noise(rng, h, w)
    speck = np.clip(np.abs(sp) - np.float32(rng.uniform(1.6, 2.3)), 0, 1) * np.sign(sp)
    speck = cv2.GaussianBlur(speck, (0, 0), rng.uniform(0.5, 1.0)) * np.float32(rng.uniform(0.5, 1.4))
    img = _lerp3(base * 0, base, np.clip(1 + 0.18 * n1 + 0.08 * n2 + speck, 0.2, 2))
    if rng.random() < 0.5:   # a crack
        pts = [(rng.uniform(0, w), rng.uniform(0, h))]
        ang = rng.uniform(0, 2 * math.pi)
        for _ in range(int(rng.integers(10, 30))):
            ang += rng.normal(0, 0.5)
            step = rng.uniform(8, 25)
            pts.append((pts[-1][0] + math.cos(ang) * step, pts[-1][1] + math.sin(ang) * step))
        cr = np.zeros((h, w), np.float32)
        cv2.polylines(cr, [np.round(np.array(pts) * 16).astype(np.int32)], False, 1.0,
                      int(rng.integers(1, 3)), cv2.LINE_8, 4)
        cr = cv2.GaussianBlur(cr, (0, 0), 0.7)
        _mul(img, 1 - 0.6 * cr)
    if rng.random() < 0.4:   # lichen spots on stone
        lich = _smooth(_fbm(rng, h, w, rng.uniform(15, 40), octaves=3), 0.9, 1.3)
        col = _jitter(rng, [(0.75, 0.7, 0.35), (0.6, 0.62, 0.55), (0.8, 0.5, 0.2)][rng.integers(3)])
        _blend_col(img, col, lich * np.float32(0.8))
    _mul(img, _relief(n1 * 2 + n2 * 0.5, light, 0.35) * _detail(rng, h, w, rng.uniform(0.06, 0.14)))
    return img


def _bg_wall(rng, h, w, light):
    palette = [(0.85, 0.83, 0.78), (0.8, 0.75, 0.62), (0.7, 0.72, 0.7), (0.75, 0.8, 0.82),
               (0.82, 0.78, 0.55), (0.62, 0.66, 0.55), (0.75, 0.6, 0.5)]
    base = _jitter(rng, palette[rng.integers(len(palette))], 0.05, (0.75, 1.0))
    n1 = _fbm(rng, h, w, rng.uniform(80, 200), octaves=4)
    stucco = _fbm(rng, h, w, rng.uniform(4, 10), octaves=3, gain=0.6)
    g = 1 + 0.05 * n1
    if rng.random() < 0.5:   # stains / dirt
        st = _smooth(_fbm(rng, h, w, rng.uniform(30, 90), octaves=4), 0.7, 1.6)
        g *= 1 - 0.25 * st
    g *= np.clip(_relief(stucco * np.float32(rng.uniform(0.2, 0.6)), light, 0.35), 0.7, 1.3)
    g *= _detail(rng, h, w, rng.uniform(0.03, 0.08))
    img = _lerp3(base * 0, base, g)
    return img


def _bg_greenleaf(rng, h, w, light):
    """The upper side of a living leaf filling the frame: midrib, secondary veins toward the
    tip, a fine vein network, tone variation and a waxy sheen."""
    pal = [(0.16, 0.32, 0.05), (0.24, 0.4, 0.09), (0.11, 0.24, 0.04), (0.32, 0.42, 0.1), (0.2, 0.3, 0.08)]
    base = _jitter(rng, pal[rng.integers(len(pal))], 0.08, (0.8, 1.15))
    n1 = _fbm(rng, h, w, rng.uniform(60, 150), octaves=3)
    n2 = _fbm(rng, h, w, rng.uniform(5, 10), octaves=2)
    net = np.exp(-np.square(n2 * np.float32(rng.uniform(6, 9))))          # fine vein network
    veins = np.zeros((h, w), np.uint8)
    ang = rng.uniform(0, 2 * math.pi)
    ca, sa = math.cos(ang), math.sin(ang)
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    L = 2 * (h + w)
    cv2.line(veins, (int((cx - ca * L) * 16), int((cy - sa * L) * 16)), (int((cx + ca * L) * 16), int((cy + sa * L) * 16)),
             255, int(rng.integers(4, 9)), cv2.LINE_AA, 4)
    spacing = rng.uniform(45, 90)
    spread = rng.uniform(0.6, 1.0)
    for k in range(-int(L / spacing), int(L / spacing) + 1):
        bx, by = cx + ca * k * spacing, cy + sa * k * spacing
        if not (-w < bx < 2 * w and -h < by < 2 * h):
            continue
        for side in (-1, 1):
            pts = [(bx, by)]
            a = ang + side * spread
            for i in range(int(1.5 * (h + w) / spacing) + 2):   # a gentle bend toward the tip
                a -= side * (0.07 if i < 4 else 0.0)
                pts.append((pts[-1][0] + math.cos(a) * spacing * 0.8, pts[-1][1] + math.sin(a) * spacing * 0.8))
            cv2.polylines(veins, [np.round(np.array(pts) * 16).astype(np.int32)], False, 200,
                          int(rng.integers(1, 3)), cv2.LINE_AA, 4)
    v = cv2.GaussianBlur(veins, (0, 0), 0.8).astype(np.float32) * np.float32(1 / 255)
    height = n1 * np.float32(0.4) - v * np.float32(1.2) - net * np.float32(0.1)
    img = _lerp3(base * 0.75, np.minimum(base * 1.6 + np.float32([0.08, 0.06, 0.0]), 1),
                 np.clip(np.float32(0.35) + np.float32(0.12) * n1 + v * np.float32(0.6) + net * np.float32(0.06), 0, 1))
    shade = _relief(height, light, rng.uniform(0.3, 0.6)) * _detail(rng, h, w, 0.04)
    _mul(img, shade)
    # waxy cuticle: a broad soft highlight
    f = 8
    gy, gx = np.mgrid[0:h // f + 1, 0:w // f + 1].astype(np.float32) * f
    hx, hy = rng.uniform(0, w), rng.uniform(0, h)
    sheen = np.exp(-((gx - hx) ** 2 + (gy - hy) ** 2) / (2 * (rng.uniform(0.2, 0.5) * (h + w)) ** 2))
    sheen = cv2.resize(sheen.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    _blend_col(img, (0.75, 0.8, 0.7), sheen * np.float32(rng.uniform(0.05, 0.25)))
    return img


def _bg_far(rng, h, w, light):
    """A far, strongly out-of-focus background (foliage, sky gaps): what sits behind a spider
    in its web. Already blurred by construction (drawn at low resolution)."""
    f = 8
    hh, ww = max(4, h // f), max(4, w // f)
    n1 = _fbm(rng, hh, ww, rng.uniform(3, 8), octaves=3)
    n2 = _fbm(rng, hh, ww, rng.uniform(2, 5), octaves=2)
    pal = [[(0.05, 0.1, 0.03), (0.25, 0.4, 0.1), (0.55, 0.65, 0.3)],
           [(0.08, 0.07, 0.05), (0.35, 0.3, 0.2), (0.7, 0.65, 0.5)],
           [(0.02, 0.03, 0.02), (0.12, 0.2, 0.08), (0.3, 0.45, 0.2)],
           [(0.15, 0.25, 0.1), (0.45, 0.55, 0.25), (0.75, 0.8, 0.7)]][rng.integers(4)]
    a, b, c = (_jitter(rng, x, 0.1, (0.8, 1.2)) for x in pal)
    t = np.clip(0.5 + 0.35 * n1, 0, 1)
    img = np.where(t[..., None] < 0.5, _lerp3(a, b, t * 2), _lerp3(b, c, t * 2 - 1))
    img = img * np.clip(1 + 0.2 * n2, 0.3, 2)[..., None]
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.6, 1.5))   # smooth bokeh
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.6:   # bokeh discs from specular highlights
        disc = np.zeros((h, w), np.float32)
        r0 = rng.uniform(6, 22)
        for _ in range(int(rng.integers(3, 25))):
            cv2.circle(disc, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                       int(r0 * rng.uniform(0.7, 1.3)), float(rng.uniform(0.2, 0.8)), -1, cv2.LINE_AA)
        disc = cv2.GaussianBlur(disc, (0, 0), 1.5)
        _blend_col(img, c * 1.3, disc * np.float32(0.7))
    return np.maximum(img, 0)


BACKGROUNDS = {"bark": _bg_bark, "litter": _bg_litter, "soil": _bg_soil, "stone": _bg_stone,
               "wall": _bg_wall, "leaf": _bg_greenleaf, "far": _bg_far}


# =========================================================================== spiders
# Spider "kinds": rough body plans of common photographed families. Units: body length 1.
_KINDS = {
    # name: (ceph len share, ceph w/l, abd w/l, leg length, leg thickness, hairy, abd patterns,
    #        ceph patterns, palettes)
    "wolf": dict(ceph=0.45, cw=0.8, aw=0.62, leg=1.25, thick=1.0, hairy=0.8,
                 abd=("stripe", "chevrons", "plain"), cph=("margins", "stripe"),
                 pal=[((0.35, 0.25, 0.15), (0.14, 0.1, 0.07), (0.6, 0.5, 0.35)),
                      ((0.3, 0.28, 0.25), (0.1, 0.09, 0.08), (0.55, 0.52, 0.45))]),
    "jumper": dict(ceph=0.5, cw=0.9, aw=0.72, leg=0.75, thick=1.25, hairy=0.9,
                   abd=("spots", "bands", "plain"), cph=("plain", "stripe"), eyes="big",
                   pal=[((0.08, 0.07, 0.06), (0.02, 0.02, 0.02), (0.85, 0.85, 0.8)),
                        ((0.3, 0.22, 0.15), (0.1, 0.07, 0.05), (0.75, 0.6, 0.4)),
                        ((0.12, 0.1, 0.09), (0.03, 0.03, 0.03), (0.8, 0.4, 0.15))]),
    "orb": dict(ceph=0.33, cw=0.85, aw=0.9, leg=1.05, thick=0.9, hairy=0.4,
                abd=("folium", "cross", "spots"), cph=("stripe", "plain"),
                pal=[((0.55, 0.38, 0.2), (0.25, 0.15, 0.08), (0.85, 0.78, 0.6)),
                     ((0.7, 0.45, 0.2), (0.35, 0.2, 0.1), (0.95, 0.9, 0.75)),
                     ((0.4, 0.35, 0.3), (0.15, 0.12, 0.1), (0.8, 0.75, 0.65))]),
    "argiope": dict(ceph=0.3, cw=0.85, aw=0.62, leg=1.4, thick=0.85, hairy=0.3,
                    abd=("bands",), cph=("silver",),
                    pal=[((0.85, 0.7, 0.12), (0.05, 0.05, 0.04), (0.92, 0.9, 0.82))]),
    "house": dict(ceph=0.45, cw=0.78, aw=0.6, leg=1.9, thick=0.75, hairy=1.0,
                  abd=("chevrons", "plain"), cph=("margins", "radial"),
                  pal=[((0.4, 0.3, 0.2), (0.18, 0.12, 0.08), (0.6, 0.5, 0.38)),
                       ((0.3, 0.27, 0.24), (0.12, 0.1, 0.09), (0.5, 0.47, 0.42))]),
    "widow": dict(ceph=0.33, cw=0.75, aw=0.95, leg=1.5, thick=0.7, hairy=0.0, gloss=1.0,
                  abd=("redmark", "plain"), cph=("plain",),
                  pal=[((0.04, 0.035, 0.03), (0.02, 0.02, 0.02), (0.7, 0.08, 0.05))]),
    "cellar": dict(ceph=0.4, cw=0.9, aw=0.55, leg=4.5, thick=0.6, hairy=0.0,
                   abd=("plain", "spots"), cph=("plain",),
                   pal=[((0.72, 0.65, 0.52), (0.5, 0.42, 0.32), (0.6, 0.52, 0.42))]),
    "crab": dict(ceph=0.45, cw=1.0, aw=1.0, leg=1.1, thick=1.0, hairy=0.2, crab=True,
                 abd=("plain", "stripe", "chevrons"), cph=("plain",),
                 pal=[((0.9, 0.88, 0.75), (0.75, 0.6, 0.3), (0.85, 0.35, 0.3)),
                      ((0.88, 0.8, 0.3), (0.7, 0.6, 0.2), (0.85, 0.4, 0.25)),
                      ((0.45, 0.35, 0.25), (0.25, 0.18, 0.12), (0.65, 0.55, 0.4))]),
}
_KIND_NAMES = list(_KINDS)
_KIND_WEIGHTS = np.array([0.18, 0.14, 0.18, 0.1, 0.14, 0.08, 0.08, 0.1])


@dataclass
class _Ellipsoid:
    cx: float
    cy: float
    hl: float            # half length (along axis)
    hw: float            # half width
    ax: float            # unit axis (x, y) in image coords
    ay: float
    pattern: str
    colors: tuple        # (base, dark, light)
    gloss: float
    hairy: float
    seed: int


def _spider_model(rng: np.random.Generator, kind: str):
    """Spider geometry in body units (body length 1, forward +x, right +y): legs (as joint
    polylines with thickness), pedipalps, and the ellipsoids of body, chelicerae and eyes."""
    k = _KINDS[kind]
    cl = k["ceph"] * rng.uniform(0.9, 1.1)
    al = 1 - cl
    cw = cl * k["cw"] * rng.uniform(0.9, 1.1)
    aw = al * k["aw"] * rng.uniform(0.85, 1.15)
    ccx = cl / 2                   # ceph centre; pedicel at x=0; abdomen behind it
    acx = -al / 2 + 0.04
    legs = []
    leglen = k["leg"] * rng.uniform(0.85, 1.15)
    thick = 0.09 * k["thick"] * rng.uniform(0.85, 1.15)
    crab = k.get("crab", False)
    # per leg pair: share of leg length, base direction (deg from forward), bend per joint
    if crab:
        pairs = [(1.25, 60, -12), (1.2, 80, -8), (0.65, 115, 8), (0.7, 140, 10)]
    else:
        pairs = [(1.0, 38, -14), (0.92, 72, -8), (0.8, 112, 12), (1.05, 145, 10)]
    seg_share = np.array([0.28, 0.09, 0.24, 0.25, 0.14])
    for side in (-1, 1):
        for j, (share, base, bend) in enumerate(pairs):
            ang = math.radians(base + rng.normal(0, 9))
            bend_r = math.radians(bend * rng.uniform(0.4, 1.8))
            L = leglen * share * rng.uniform(0.92, 1.08)
            lift = rng.uniform(0.55, 0.95)          # femur rises: foreshortened from above
            att_x = ccx + cl * 0.5 * (0.55 - 0.33 * j)
            att_y = cw * 0.42 * math.sqrt(max(0.0, 1 - ((att_x - ccx) / (cl / 2)) ** 2)) + 0.02
            pts = [(att_x, side * att_y)]
            a = ang
            for s, frac in enumerate(seg_share):
                seg = L * frac * (lift if s == 0 else 1.0) * (rng.uniform(0.8, 1.0) if s == 1 else 1.0)
                if s == 1:
                    a += bend_r * 1.8
                elif s > 1:
                    a += bend_r * rng.uniform(0.3, 1.0)
                x, y = pts[-1]
                pts.append((x + math.cos(a) * seg, y + side * math.sin(a) * seg))
            t0 = thick * (1.0 - 0.04 * abs(j - 1.5))
            th = t0 * np.array([1.0, 0.95, 0.8, 0.62, 0.42, 0.25])
            legs.append((np.array(pts, np.float32), th.astype(np.float32), j))
    palps = []
    for side in (-1, 1):
        a = math.radians(rng.uniform(8, 35))
        p0 = (ccx + cl * 0.42, side * cw * 0.18)
        pts = [p0]
        for seg, da in ((cl * 0.22, 0.0), (cl * 0.14, 0.4), (cl * 0.14, 0.3)):
            a += da * rng.uniform(-1, 1)
            x, y = pts[-1]
            pts.append((x + math.cos(a) * seg, y + side * math.sin(a) * seg))
        palps.append((np.array(pts, np.float32), np.float32(thick) * np.array([0.8, 0.75, 0.7, 0.85], np.float32)))
    return dict(cl=cl, cw=cw, al=al, aw=aw, ccx=ccx, acx=acx, legs=legs, palps=palps)


def _ellipsoid_pattern(e: _Ellipsoid, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Colour of a body part at normalised coordinates s (along, +1 front) and t (across)."""
    base, dark, light = (np.asarray(c, np.float32) for c in e.colors)
    p = e.pattern
    if p == "plain":
        return _lerp3(base, dark, _smooth(-s, -0.2, 1.0) * 0.35)
    r = np.random.default_rng(e.seed)
    at = np.abs(t)
    if p == "stripe":            # light median band (wolf spiders' heart mark)
        w = 1 - _smooth(at, 0.18, 0.3)
        return _lerp3(base, light, w * 0.7)
    if p == "margins":           # dark centre band, light lateral margins
        w = _smooth(at, 0.22, 0.32) * (1 - _smooth(at, 0.62, 0.75))
        col = _lerp3(dark, base, 1 - _smooth(at, 0.12, 0.2) * 0.0 + 0)
        return _lerp3(col, light, w * 0.9)
    if p == "radial":
        ang = np.arctan2(t, s + 0.3)
        w = _smooth(np.cos(ang * 8), 0.6, 0.95) * _smooth(np.hypot(s, t), 0.25, 0.6)
        return _lerp3(base, dark, w * 0.7)
    if p == "chevrons":
        n = r.uniform(3.5, 6)
        ph = np.mod((s + 0.9 * at) * n + r.uniform(0, 1), 1.0)
        w = _smooth(ph, 0.55, 0.68) * (1 - _smooth(ph, 0.85, 0.97)) * (1 - _smooth(at, 0.45, 0.7)) * _smooth(s, -0.95, -0.6)
        col = _lerp3(base, light, (1 - _smooth(at, 0.15, 0.25)) * 0.6)
        return _lerp3(col, dark, w)
    if p == "folium":            # leaf-shaped dark band with scalloped, light-rimmed edges
        edge = (0.42 + 0.12 * s) * (1 + 0.16 * np.sin((s + 1) * r.uniform(9, 14))) * (1 - _smooth(-s, 0.7, 1.0))
        w = 1 - _smooth(at - edge, -0.04, 0.03)
        rim = np.exp(-((at - edge) / 0.06) ** 2)
        col = _lerp3(base, dark, w * 0.85)
        return _lerp3(col, light, rim * 0.6)
    if p == "cross":             # garden spider: white dots in a cross on a folium
        edge = (0.45 + 0.1 * s) * (1 + 0.14 * np.sin((s + 1) * 11))
        col = _lerp3(base, dark, (1 - _smooth(at - edge, -0.04, 0.04)) * 0.7)
        d1 = np.minimum(np.hypot(at, np.mod(s * 5, 1.0) - 0.5), 1)
        wline = (s > 0.05) * (s < 0.85) * (1 - _smooth(d1, 0.06, 0.12)) * 0.9
        wbar = (np.abs(s - 0.55) < 0.07) * (at < 0.4) * (1 - _smooth(np.abs(np.mod(t * 5, 1) - 0.5), 0.15, 0.35))
        return _lerp3(col, light, np.maximum(wline, wbar))
    if p == "spots":
        w = np.zeros_like(s)
        for k in range(int(r.integers(2, 4))):
            sy = 0.5 - 0.45 * k + r.normal(0, 0.05)
            tx = r.uniform(0.2, 0.4)
            rad = r.uniform(0.1, 0.18)
            w = np.maximum(w, 1 - _smooth(np.hypot(at - tx, s - sy), rad * 0.7, rad))
        return _lerp3(_lerp3(base, dark, _smooth(-s, 0.2, 1.0) * 0.5), light, w)
    if p == "bands":             # Argiope / striped jumpers: transverse bands
        n = r.uniform(3.5, 6.5)
        ph = np.sin((s * n + 0.35 * np.sin(at * 6)) * math.pi)
        wdark = _smooth(ph, 0.1, 0.35)
        col = _lerp3(base, dark, wdark)
        front = _smooth(s, 0.55, 0.75)
        return _lerp3(col, light, front * 0.9)
    if p == "silver":            # silvery, hairy cephalothorax
        return _lerp3(light, base * 0.5 + light * 0.5, _smooth(np.hypot(s, t), 0.2, 1.0))
    if p == "redmark":
        w = 1 - _smooth(np.hypot(at * 1.8, s + 0.55), 0.12, 0.2)
        return _lerp3(base, light, w)
    return _lerp3(base, dark, _smooth(-s, -0.2, 1.0) * 0.35)


def _draw_ellipsoid(C: np.ndarray, A: np.ndarray, e: _Ellipsoid, light: np.ndarray,
                    grain: np.ndarray | None) -> None:
    """Per-pixel shaded ellipsoid composited (premultiplied 'over') into C/A, in place."""
    H, W = A.shape
    rx = math.hypot(e.hl * e.ax, e.hw * e.ay) + 2.5     # bounds of the rotated ellipse
    ry = math.hypot(e.hl * e.ay, e.hw * e.ax) + 2.5
    x0, x1 = max(0, int(e.cx - rx)), min(W, int(e.cx + rx) + 2)
    y0, y1 = max(0, int(e.cy - ry)), min(H, int(e.cy + ry) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - e.cx
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - e.cy
    s = (dx * e.ax + dy * e.ay) / e.hl
    t = (dy * e.ax - dx * e.ay) / e.hw
    d2 = s * s + t * t
    d = np.sqrt(d2)
    edge_px = (1 - d) * min(e.hl, e.hw)
    g = grain[y0:y1, x0:x1] if grain is not None else None
    if g is not None:
        edge_px = edge_px + (0.3 + e.hairy * 2.0) * g
        # break up pattern edges: real markings are made of hairs, not vector shapes
        s_p, t_p = s + (0.02 + 0.05 * e.hairy) * g, t + (0.02 + 0.05 * e.hairy) * g
    else:
        s_p, t_p = s, t
    alpha = np.clip(edge_px + 0.5, 0, 1)
    if not alpha.any():
        return
    nz = np.sqrt(np.clip(1 - d2, 0, 1)) * 1.3 + 0.05
    # light in the ellipsoid's frame (s, t)
    ls = light[0] * e.ax + light[1] * e.ay
    lt = light[1] * e.ax - light[0] * e.ay
    inv = 1.0 / np.sqrt(s * s + t * t + nz * nz)
    ndl = np.clip((s * ls + t * lt + nz * light[2]) * inv, 0, 1)
    hz = light[2] + 1.0
    hn = math.sqrt(ls * ls + lt * lt + hz * hz)
    ndh = np.clip((s * ls + t * lt + nz * hz) * inv / hn, 0, 1)
    col = _ellipsoid_pattern(e, s_p, t_p)
    shade = 0.2 + 0.95 * ndl
    if g is not None:
        shade = shade * (1 + (0.08 + 0.3 * e.hairy) * g)
    col *= shade[..., None]
    hair = min(1.0, e.hairy)
    # glossy cuticle: tight highlight; hairy bodies: a broad, faint sheen instead
    spec = ndh ** (12 + 50 * e.gloss) * (0.2 + 0.9 * e.gloss) * (1 - 0.9 * hair)
    spec += ndh ** 3 * (0.12 * hair)
    col += spec[..., None]
    a = alpha[..., None]
    C[y0:y1, x0:x1] = C[y0:y1, x0:x1] * (1 - a) + col * a
    A[y0:y1, x0:x1] = A[y0:y1, x0:x1] * (1 - alpha) + alpha


def _u8(c) -> tuple:
    return tuple(int(v) for v in np.clip(np.asarray(c, np.float64) * 255, 0, 255))


def _limb_colors(color, dark, lite) -> dict:
    color, dark, lite = (np.asarray(c, np.float64) for c in (color, dark, lite))
    out = {}
    for pre, c in (("", color), ("d", dark)):
        out[pre + "sh"] = _u8(c * 0.45) + (255,)
        out[pre + "mid"] = _u8(c) + (255,)
        out[pre + "hi"] = _u8(np.minimum(c * 1.5 + 0.1, 1)) + (255,)
    out["hair"] = _u8((dark * 0.7 + lite * 0.1) * (200 / 255)) + (200,)   # premultiplied
    return out


def _draw_limbs(CA: np.ndarray, limbs: list, cols: dict, light: np.ndarray, hairy: float, rng) -> None:
    """Jointed limbs, each a list of joints with a thickness per joint, as tapered, shaded,
    antialiased segments on an RGBA uint8 canvas (colour premultiplied, so antialiased drawing
    is 'over' compositing), in the given order; setae for hairy spiders; banded limbs get a
    dark ring at the end of each segment.
    All geometry is computed with numpy first; the loop only hands tuples to cv2."""
    A_, B_, T_, D_ = [], [], [], []
    for pts, th, band in limbs:
        # one piece per segment, tapering from segment to segment (splitting a segment to
        # taper it within would show as a false joint)
        n = len(pts) - 1
        a, b, t = pts[:-1], pts[1:], (th[:-1] + th[1:]) / 2
        if band:   # annulated legs: a dark ring over the distal quarter of each segment
            ring = a + (b - a) * 0.72
            a = np.stack([a, ring], 1).reshape(-1, 2)
            b = np.stack([b, b], 1).reshape(-1, 2)
            t = np.repeat(t, 2)
            d = np.tile([False, True], n)
        else:
            d = np.zeros(n, bool)
        A_.append(a)
        B_.append(b)
        T_.append(t)
        D_.append(d)
    a, b, t, dk = np.concatenate(A_), np.concatenate(B_), np.concatenate(T_), np.concatenate(D_)
    tw = np.maximum(1, np.rint(t)).astype(int)
    lxy = -np.asarray(light[:2], np.float64)
    o1 = (t * 0.12)[:, None] * lxy
    o2 = (t * 0.25)[:, None] * lxy
    q = lambda v: np.rint(v * 16).astype(np.int32).tolist()   # noqa: E731 - 4 fractional bits
    rows = zip(q(a), q(b), q(a + o1), q(b + o1), q(a + o2), q(b + o2), tw.tolist(),
               np.maximum(1, np.rint(t * 0.6)).astype(int).tolist(),
               np.maximum(1, np.rint(t * 0.22)).astype(int).tolist(), dk.tolist())
    line, AA = cv2.line, cv2.LINE_AA
    plain = (cols["sh"], cols["mid"], cols["hi"])
    dark = (cols["dsh"], cols["dmid"], cols["dhi"])
    for pa, pb, ma, mb, ha, hb, w0, w1, w2, d in rows:
        c = dark if d else plain
        line(CA, pa, pb, c[0], w0, AA, 4)
        if w0 >= 2:          # lit side of the cylinder, then its highlight
            line(CA, ma, mb, c[1], w1, AA, 4)
            if w0 >= 3:
                line(CA, ha, hb, c[2], w2, AA, 4)
    if hairy > 0:
        seg = b - a
        L = np.hypot(seg[:, 0], seg[:, 1])
        per = hairy * L / np.maximum(1.5, t * 0.9) * 0.6
        m = int(per.sum())
        if m:
            si = rng.choice(len(a), m, p=per / per.sum())
            u = rng.random(m)
            ang = np.arctan2(seg[si, 1], seg[si, 0])
            side = rng.choice((-1.0, 1.0), m)
            aa = ang + side * rng.uniform(0.35, 0.9, m)
            tt = t[si]
            ln = tt * rng.uniform(0.7, 1.5, m) + 1
            off = tt * 0.45 * side
            hs = np.empty((m, 2, 2), np.float64)
            hs[:, 0, 0] = a[si, 0] + seg[si, 0] * u - np.sin(ang) * off
            hs[:, 0, 1] = a[si, 1] + seg[si, 1] * u + np.cos(ang) * off
            hs[:, 1, 0] = hs[:, 0, 0] + np.cos(aa) * ln
            hs[:, 1, 1] = hs[:, 0, 1] + np.sin(aa) * ln
            cv2.polylines(CA, list(np.rint(hs * 16).astype(np.int32)), False, cols["hair"], 1, AA, 4)


@dataclass
class _Patch:
    """A rendered object: premultiplied colour and coverage at 1x, placed at (x0, y0)."""
    cls: str
    x0: int
    y0: int
    C: np.ndarray
    A: np.ndarray
    height: float        # how far above the surface (shadow offset), pixels


def _transform(pts: np.ndarray, scale: float, rot: float, cx: float, cy: float) -> np.ndarray:
    """Scale, rotate and move (n, 2) points."""
    c, s = math.cos(rot) * scale, math.sin(rot) * scale
    return pts @ np.array([[c, s], [-s, c]], np.float32) + np.array([cx, cy], np.float32)


def _spider_extent(model) -> np.ndarray:
    pts = [l[0] for l in model["legs"]] + [p[0] for p in model["palps"]]
    pts.append(np.array([[model["acx"] - model["al"] / 2, 0], [model["ccx"] + model["cl"] / 2, 0],
                         [0, model["aw"] / 2], [0, -model["aw"] / 2]], np.float32))
    return np.concatenate(pts)


def _render_spider(rng, kind: str, model, span: float, rot: float, cx: float, cy: float,
                   light: np.ndarray, surround: float | None = None) -> _Patch:
    """A spider as a patch. `surround`: mean linear brightness of the background where it
    sits; most spiders are then kept clearly lighter or darker than it (people photograph
    spiders they can see), a few stay camouflaged."""
    k = _KINDS[kind]
    pal = k["pal"][rng.integers(len(k["pal"]))]
    # palettes are written as seen; the camera's gamma brightens mid-tones, so darken here
    tone = {"argiope": 0.8, "crab": 0.8, "cellar": 0.7}.get(kind, 0.55) * rng.uniform(0.8, 1.15)
    push = rng.random() < 0.8
    if surround is not None and push:
        body = float(np.mean(pal[0])) * tone
        ratio = body / max(surround, 1e-3)
        if 1 / 1.8 < ratio < 1.8:        # too close to the background: darken, or lighten
            tone *= 0.45 if surround > 0.12 or body > 0.35 else 2.2
    base = _jitter(rng, pal[0], 0.1, (0.8, 1.2)) * np.float32(tone)
    dark = _jitter(rng, pal[1], 0.1, (0.8, 1.2)) * np.float32(tone)
    lite = _jitter(rng, pal[2], 0.08, (0.85, 1.1)) * np.float32(tone ** 0.5)
    hairy = k["hairy"] * rng.uniform(0.6, 1.2)
    gloss = k.get("gloss", rng.uniform(0.0, 0.4))
    ext = _spider_extent(model)
    unit = span / float(np.max(np.ptp(ext, axis=0)))        # pixels per body length
    ss = 4 if span < 60 else (2 if span < 170 else 1)   # supersample small ones: thin legs
    P = _transform(ext, unit, rot, cx, cy)
    margin = 3 + unit * 0.05
    ox = int(math.floor(P[:, 0].min() - margin))
    oy = int(math.floor(P[:, 1].min() - margin))
    w = int(math.ceil(P[:, 0].max() + margin)) - ox
    h = int(math.ceil(P[:, 1].max() + margin)) - oy
    Hs, Ws = h * ss, w * ss
    off = np.array([ox, oy], np.float32)

    def to_ss(pts):
        return (_transform(pts, unit, rot, cx, cy) - off) * ss + (ss - 1) / 2

    CA = np.zeros((Hs, Ws, 4), np.uint8)
    band = rng.random() < {"orb": 0.8, "argiope": 1.0, "house": 0.6, "wolf": 0.6, "widow": 0.0,
                           "cellar": 0.2}.get(kind, 0.3)
    leg_col = _jitter(rng, base * 0.8 + lite * 0.2 if band else base, 0.05)
    if kind == "argiope":
        leg_col = _jitter(rng, dark * 0.3 + np.float32([0.5, 0.4, 0.25]) * tone, 0.05)
    leg_dark = dark
    legs = sorted(model["legs"], key=lambda l: -abs(l[2] - 1.5))  # outer pairs first
    cols = _limb_colors(leg_col, leg_col * 0.35 + leg_dark * 0.65, lite)
    limbs = [(to_ss(pts).astype(np.float64), (th * unit * ss).astype(np.float64), band) for pts, th, _j in legs]
    limbs += [(to_ss(pts).astype(np.float64), (th * unit * ss).astype(np.float64), False) for pts, th in model["palps"]]
    _draw_limbs(CA, limbs, cols, light, hairy, rng)
    F = CA.astype(np.float32)
    F *= np.float32(1 / 255)
    # the body parts are drawn at 1x: their per-pixel shading antialiases its own edges, so
    # only the thin legs need the supersampling
    if ss > 1:
        F = cv2.resize(F, (w, h), interpolation=cv2.INTER_AREA)
    C, A = F[..., :3], F[..., 3]
    grain = _hair_noise(rng, h, w, rot + math.pi, scale=0.5 + 0.1 * span / 100)
    c_, s_ = math.cos(rot), math.sin(rot)
    u = unit

    def centre(x, y):
        q = _transform(np.array([[x, y]], np.float32), unit, rot, cx, cy)[0] - off
        return float(q[0]), float(q[1])

    abd_pat = k["abd"][rng.integers(len(k["abd"]))]
    ceph_pat = k["cph"][rng.integers(len(k["cph"]))]
    seed = int(rng.integers(2**31))
    ax, ay = c_, s_
    acx, acy = centre(model["acx"], 0)
    _draw_ellipsoid(C, A, _Ellipsoid(acx, acy, model["al"] / 2 * u, model["aw"] / 2 * u, ax, ay,
                                     abd_pat, (base, dark, lite), gloss, hairy, seed), light, grain)
    ccx, ccy = centre(model["ccx"], 0)
    _draw_ellipsoid(C, A, _Ellipsoid(ccx, ccy, model["cl"] / 2 * u, model["cw"] / 2 * u, ax, ay,
                                     ceph_pat, (base * 0.9, dark, lite), gloss * 0.8 + 0.1, hairy * 0.8,
                                     seed + 1), light, grain)
    # chelicerae and eyes: small glossy ellipsoids at the front
    for side in (-1, 1):
        chx, chy = centre(model["ccx"] + model["cl"] * 0.47, side * model["cw"] * 0.12)
        _draw_ellipsoid(C, A, _Ellipsoid(chx, chy, model["cl"] * 0.14 * u, model["cw"] * 0.11 * u, ax, ay,
                                         "plain", (dark * 1.2, dark, lite), 0.6, 0.0, seed), light, None)
    if k.get("eyes") == "big":
        eyes = [(0.38, 0.15, 0.11), (0.38, -0.15, 0.11), (0.36, 0.33, 0.055), (0.36, -0.33, 0.055)]
    else:
        eyes = [(0.4, 0.06, 0.045), (0.4, -0.06, 0.045), (0.36, 0.15, 0.04), (0.36, -0.15, 0.04),
                (0.3, 0.1, 0.035), (0.3, -0.1, 0.035)]
    hx, hy = -float(light[0]), -float(light[1])
    for ex, ey, er in eyes:            # glossy black domes with a specular dot
        px, py = centre(model["ccx"] + model["cl"] * ex, model["cw"] * ey * 1.0)
        rr = er * model["cl"] * u
        if rr < 0.7:
            continue
        cv2.circle(F, (int(px * 16), int(py * 16)), int(rr * 16), (0.02, 0.02, 0.02, 1.0), -1, cv2.LINE_8, 4)
        if rr >= 2:
            cv2.circle(F, (int((px - hx * rr * 0.4) * 16), int((py - hy * rr * 0.4) * 16)),
                       int(rr * 0.3 * 16), (0.9, 0.9, 0.9, 1.0), -1, cv2.LINE_8, 4)
    C, A = np.ascontiguousarray(F[..., :3]), np.ascontiguousarray(F[..., 3])
    return _Patch(SPIDER, ox, oy, C, A, height=unit * rng.uniform(0.05, 0.15))


def _render_caterpillar(rng, length: float, rot: float, cx: float, cy: float,
                        light: np.ndarray) -> _Patch:
    n = int(rng.integers(9, 14))
    r = length / (n * 1.25) * 0.9
    bend = rng.normal(0, 0.25)
    ang = 0.0
    pts = [(0.0, 0.0)]
    for _ in range(n - 1):
        ang += bend + rng.normal(0, 0.08)
        pts.append((pts[-1][0] + math.cos(ang) * r * 1.25, pts[-1][1] + math.sin(ang) * r * 1.25))
    pts = np.array(pts, np.float32)
    pts -= pts.mean(0)
    P = _transform(pts, 1.0, rot, cx, cy)
    ss = 2
    m = r * 1.4 + 3
    ox, oy = int(math.floor(P[:, 0].min() - m)), int(math.floor(P[:, 1].min() - m))
    w = int(math.ceil(P[:, 0].max() + m)) - ox
    h = int(math.ceil(P[:, 1].max() + m)) - oy
    C = np.zeros((h * ss, w * ss, 3), np.float32)
    A = np.zeros((h * ss, w * ss), np.float32)
    Q = (P - [ox, oy]) * ss + (ss - 1) / 2
    pal = [((0.35, 0.6, 0.15), (0.2, 0.4, 0.08), (0.85, 0.9, 0.6)),
           ((0.4, 0.3, 0.18), (0.15, 0.1, 0.06), (0.85, 0.6, 0.2)),
           ((0.08, 0.08, 0.07), (0.02, 0.02, 0.02), (0.9, 0.55, 0.1)),
           ((0.55, 0.65, 0.3), (0.3, 0.4, 0.12), (0.95, 0.95, 0.85))][rng.integers(4)]
    base, dark, lite = (_jitter(rng, c, 0.08) for c in pal)
    hairy = rng.random() < 0.35
    grain = _grain_noise(rng, h * ss, w * ss) if hairy else None
    seed = int(rng.integers(2**31))
    for i in range(n):
        j = min(i + 1, n - 1) if i < n - 1 else i - 1
        d = Q[j] - Q[i] if i < n - 1 else Q[i] - Q[j]
        dn = d / (np.hypot(*d) + 1e-6)
        taper = 0.75 if i == 0 else (0.85 if i == n - 1 else 1.0)
        pat = "stripe" if i < n - 1 else "plain"
        cols = (base, dark, lite) if i < n - 1 else (dark * 1.5, dark, lite)
        _draw_ellipsoid(C, A, _Ellipsoid(float(Q[i, 0]), float(Q[i, 1]), r * ss * 0.8 * taper,
                                         r * ss * taper, float(dn[0]), float(dn[1]), pat, cols,
                                         0.5 if i == n - 1 else 0.25, 0.6 if hairy else 0.0, seed + i),
                        light, grain)
    C = cv2.resize(C, (w, h), interpolation=cv2.INTER_AREA)
    A = cv2.resize(A, (w, h), interpolation=cv2.INTER_AREA)
    return _Patch(CATERPILLAR, ox, oy, C, A, height=r * 0.4)


def _render_leaf(rng, length: float, rot: float, cx: float, cy: float, light: np.ndarray) -> _Patch:
    hl = length / 2
    hw = hl * rng.uniform(0.3, 0.55)
    c, s = math.cos(rot), math.sin(rot)
    ext = abs(c) * (hl * 1.25) + abs(s) * hw + 3, abs(s) * (hl * 1.25) + abs(c) * hw + 3
    ox, oy = int(math.floor(cx - ext[0])), int(math.floor(cy - ext[1]))
    w, h = int(math.ceil(2 * ext[0])) + 1, int(math.ceil(2 * ext[1])) + 1
    ss = 2
    X = (np.arange(w * ss, dtype=np.float32)[None, :] - (ss - 1) / 2) / ss + ox - cx
    Y = (np.arange(h * ss, dtype=np.float32)[:, None] - (ss - 1) / 2) / ss + oy - cy
    u = (X * c + Y * s) / hl          # along: -1 stem end .. +1 tip
    v = (Y * c - X * s) / hw
    curl = rng.uniform(-0.15, 0.15)
    v = v + curl * u * u
    width = np.clip(1 - u * u, 0, 1) ** 0.7 * (1 + 0.25 * (1 - u) * 0.5)
    serr = 0.04 * np.sin(u * rng.uniform(20, 40)) if rng.random() < 0.4 else 0.0
    dist = (width + serr - np.abs(v)) * hw          # px inside the blade edge
    blade = np.clip(dist + 0.5, 0, 1) * (np.abs(u) <= 1.0)
    stem = np.clip(1.2 - np.abs(v * hw), 0, 1) * (u < -0.95) * (u > -1.25)
    alpha = np.maximum(blade, stem).astype(np.float32)
    pal = [((0.3, 0.5, 0.12), (0.2, 0.35, 0.08), (0.6, 0.7, 0.35)),
           ((0.7, 0.55, 0.15), (0.5, 0.35, 0.1), (0.85, 0.75, 0.4)),
           ((0.5, 0.3, 0.12), (0.3, 0.18, 0.08), (0.7, 0.5, 0.3)),
           ((0.6, 0.25, 0.08), (0.4, 0.12, 0.05), (0.85, 0.55, 0.2))][rng.integers(4)]
    base, dark, lite = (_jitter(rng, cc, 0.08) for cc in pal)
    vein = np.exp(-(v * hw / 1.0) ** 2) + 0.6 * _smooth(np.cos((u - np.abs(v) * 0.7) * rng.uniform(14, 22)), 0.85, 1.0) * (np.abs(v) < width * 0.9)
    col = _lerp3(base, lite, np.clip(vein, 0, 1) * 0.7)
    mott = _fbm(rng, h * ss, w * ss, 12 * ss, octaves=2)
    col *= (1 + 0.25 * mott)[..., None]
    ndl = np.clip(light[2] + (-v * 0.35 * np.sign(curl + 1e-3)) * (light[1] * c - light[0] * s), 0.2, 1.2)
    col *= (0.35 + 0.75 * ndl)[..., None]
    C = col * alpha[..., None]
    C = cv2.resize(C, (w, h), interpolation=cv2.INTER_AREA)
    A = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
    return _Patch(LEAF, ox, oy, C, A, height=hl * 0.08)


# =========================================================================== web
def _draw_web(img: np.ndarray, rng, cx: float, cy: float, light) -> None:
    h, w = img.shape[:2]
    layer = np.zeros((h, w), np.uint8)
    R = math.hypot(max(cx, w - cx), max(cy, h - cy)) * 1.1
    n = int(rng.integers(18, 34))
    angs = np.sort(rng.uniform(0, 2 * math.pi, 1)[0] + np.arange(n) * 2 * math.pi / n + rng.normal(0, 0.06, n))
    hub = rng.uniform(8, 20)
    for a in angs:
        p1 = (int((cx + math.cos(a) * hub * 0.3) * 16), int((cy + math.sin(a) * hub * 0.3) * 16))
        p2 = (int((cx + math.cos(a) * R) * 16), int((cy + math.sin(a) * R) * 16))
        cv2.line(layer, p1, p2, int(rng.integers(120, 220)), 1, cv2.LINE_AA, 4)
    step = rng.uniform(6, 14)
    r = hub * 1.8
    rings = []
    while r < R:
        rr = r * (1 + rng.normal(0, 0.03, n))
        pts = np.stack([cx + np.cos(angs) * rr, cy + np.sin(angs) * rr], 1)
        rings.append(np.round(pts * 16).astype(np.int32))
        r += step * rng.uniform(0.85, 1.15) * (1 + r / R * 0.5)
    cv2.polylines(layer, rings, True, 255, 1, cv2.LINE_AA, 4)
    # glints: threads catch the light in patches; smooth, so made at 1/8 resolution
    gl = np.clip(0.35 + 0.7 * _fbm(rng, h // 8 + 1, w // 8 + 1, rng.uniform(5, 15), octaves=2), 0.05, 1.0)
    gl = cv2.resize(gl, (w, h), interpolation=cv2.INTER_LINEAR)
    a = cv2.multiply(layer, gl, dtype=cv2.CV_32F, scale=rng.uniform(0.3, 0.7) / 255)
    img += _gray3(a)        # thin bright threads: adding light is close to 'over' in white


# =========================================================================== scene
def _image_size(rng, p: SyntheticParams) -> tuple[int, int]:
    long = int(rng.integers(max(p.min_size, int(p.max_size * 0.6)), p.max_size + 1))
    aspect = float(rng.choice([1.0, 1.25, 4 / 3, 1.5, 16 / 9])) * rng.uniform(0.98, 1.02)
    short = int(np.clip(round(long / aspect), p.min_size, long))
    return (long, short) if rng.random() < 0.7 else (short, long)


def _flags(rng, p: SyntheticParams) -> dict:
    return {"two": rng.random() < p.two_spider_fraction, "small": rng.random() < p.small_fraction,
            "distractor": rng.random() < p.distractor_fraction, "web": rng.random() < p.web_fraction}


def _place(rng, w, h, half: tuple, taken: list, pad=4) -> tuple | None:
    hx, hy = half
    for _ in range(40):
        if w - 2 * (hx + pad) <= 0 or h - 2 * (hy + pad) <= 0:
            return None
        cx = rng.uniform(hx + pad, w - hx - pad)
        cy = rng.uniform(hy + pad, h - hy - pad)
        box = (cx - hx - pad, cy - hy - pad, cx + hx + pad, cy + hy + pad)
        if all(box[2] < t[0] or box[0] > t[2] or box[3] < t[1] or box[1] > t[3] for t in taken):
            taken.append(box)
            return cx, cy
    return None


def render(p: SyntheticParams, seed: int, index: int):
    """Draw image `index`: returns (rgb uint8 HxWx3, label map, objects, jpeg quality, info)."""
    rng = np.random.default_rng([seed, index])
    W, H = _image_size(rng, p)
    fl = _flags(rng, p)
    az = rng.uniform(0, 2 * math.pi)
    elev = rng.uniform(0.45, 0.85)
    light = np.array([math.cos(az) * math.sqrt(1 - elev ** 2), math.sin(az) * math.sqrt(1 - elev ** 2), elev],
                     np.float32)
    if fl["web"]:
        bgname = "far" if rng.random() < 0.75 else str(rng.choice(["bark", "wall", "stone"]))
    else:
        bgname = str(rng.choice(["bark", "litter", "soil", "stone", "wall", "leaf", "far"],
                                p=[0.26, 0.17, 0.12, 0.12, 0.15, 0.13, 0.05]))
    img = BACKGROUNDS[bgname](rng, H, W, light)

    # ---- plan objects (placed without overlap so each label map region is one whole object)
    short = min(W, H)
    taken: list = []
    plans = []
    n_sp = 2 if fl["two"] else 1
    if fl["distractor"] and not fl["two"] and rng.random() < 0.3:
        n_sp = 0                              # a distractor alone: the detector must say no
    # a spider-free photo; its own stream, so every other image stays as it was without them
    if np.random.default_rng([seed, 0xE3F7, index]).random() < p.empty_fraction:
        n_sp = 0
    for k in range(n_sp):
        kind = str(rng.choice(_KIND_NAMES, p=_KIND_WEIGHTS / _KIND_WEIGHTS.sum()))
        if fl["web"] and k == 0 and rng.random() < 0.7:
            kind = str(rng.choice(["orb", "argiope", "orb", "house"]))
        model = _spider_model(rng, kind)
        if fl["small"] and k == n_sp - 1:
            span = rng.uniform(28, 70)
        elif n_sp == 2:
            span = short * rng.uniform(0.28, 0.48)
        elif fl["distractor"]:   # leave room for the distractor
            span = short * rng.uniform(0.3, 0.55)
        else:   # macro framing: the spider usually fills much of the frame
            span = short * (rng.uniform(0.55, 0.95) if rng.random() < 0.6 else rng.uniform(0.3, 0.55))
        rot = rng.uniform(0, 2 * math.pi)
        ext = _transform(_spider_extent(model), 1.0, rot, 0, 0)
        unit = span / float(np.max(np.ptp(_spider_extent(model), axis=0)))
        half = (float(np.ptp(ext[:, 0])) * unit / 2 + 2, float(np.ptp(ext[:, 1])) * unit / 2 + 2)
        cen = (ext.max(0) + ext.min(0)) / 2 * unit
        plans.append(("spider", kind, model, span, rot, half, cen))
    if fl["distractor"]:
        dk = CATERPILLAR if rng.random() < 0.5 else LEAF
        length = short * rng.uniform(0.2, 0.45)
        rot = rng.uniform(0, 2 * math.pi)
        half = (length * 0.7, length * 0.7)
        plans.append((dk, None, None, length, rot, half, np.zeros(2)))
    placed = []
    for pl in plans:
        pos = _place(rng, W, H, pl[5], taken)
        if pos is None:                             # shrink until it fits
            for _ in range(4):
                if pl[0] != "spider" and pl[3] * 0.7 < 24:
                    break
                pl = pl[:3] + (pl[3] * 0.7, pl[4], (pl[5][0] * 0.7, pl[5][1] * 0.7), pl[6] * 0.7)
                pos = _place(rng, W, H, pl[5], taken)
                if pos is not None:
                    break
        if pos is not None:
            placed.append((pl, pos))

    # ---- depth of field: the focus plane passes through the first object
    focus = placed[0][1] if placed else (W / 2, H / 2)
    if bgname != "far":                          # (the far background is defocused already)
        if fl["web"]:
            img = _blur(img, rng.uniform(3, 8))  # surface well behind the web
        elif rng.random() < 0.75:                # sharp near the subject, blurring away from it
            sig = rng.uniform(2, 7)
            tilt = rng.uniform(0, 2 * math.pi)
            f = 8
            gy, gx = np.mgrid[0:H // f + 1, 0:W // f + 1].astype(np.float32) * f
            dist = np.abs((gx - focus[0]) * math.cos(tilt) + (gy - focus[1]) * math.sin(tilt))
            wmap = np.clip((dist - short * rng.uniform(0.08, 0.25)) / (short * rng.uniform(0.3, 0.6)), 0, 1)
            wmap = cv2.resize(wmap, (W, H), interpolation=cv2.INTER_LINEAR)
            _blend_img(img, _blur(img, sig), wmap)
    if bgname == "far" and rng.random() < 0.35:
        img *= np.float32(rng.uniform(0.06, 0.3))   # flash at night: the far background falls dark
    if fl["web"]:
        _draw_web(img, rng, focus[0], focus[1], light)

    # ---- objects: shadow, then the object over it
    mask = np.zeros((H, W), np.uint8)
    objects = []
    for label, (pl, (cx, cy)) in enumerate(placed, start=1):
        kind = pl[0]
        if kind == "spider":
            ccx, ccy = cx - pl[6][0], cy - pl[6][1]
            r = max(8, int(pl[3] * 0.15))
            near = img[max(0, int(cy) - r):int(cy) + r, max(0, int(cx) - r):int(cx) + r]
            patch = _render_spider(rng, pl[1], pl[2], pl[3], pl[4], ccx, ccy, light,
                                   surround=float(near.mean()) if near.size else None)
        elif kind == CATERPILLAR:
            patch = _render_caterpillar(rng, pl[3], pl[4], cx, cy, light)
        else:
            patch = _render_leaf(rng, pl[3], pl[4], cx, cy, light)
        # light bounced off the surroundings tints the subject a little
        r = max(8, int(pl[3] * 0.3))
        near = img[max(0, int(cy) - r):int(cy) + r:4, max(0, int(cx) - r):int(cx) + r:4]
        if near.size:
            env = near.reshape(-1, 3).mean(0) + 1e-3
            patch.C *= np.clip(env / env.mean(), 0.8, 1.25).astype(np.float32) ** np.float32(0.5)
        box = _composite(img, mask, patch, label, light, on_web=fl["web"] and kind == "spider")
        if box is not None:
            objects.append(SyntheticObject(kind, box, label))

    # ---- the camera: light falloff + vignetting, white balance, noise, tone curve
    f = 16
    gy, gx = np.mgrid[0:H // f + 2, 0:W // f + 2].astype(np.float32) * f
    nx, ny = (gx - W / 2) / (W / 2), (gy - H / 2) / (H / 2)
    vig = 1 - rng.uniform(0.1, 0.45) * ((nx * nx + ny * ny) / 2) ** rng.uniform(0.8, 1.5)
    grad = 1 + rng.uniform(0, 0.25) * (nx * light[0] + ny * light[1])
    gain = cv2.resize((vig * grad).astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    expo = rng.uniform(0.7, 1.15)
    wb = np.array([rng.uniform(0.9, 1.1), 1.0, rng.uniform(0.88, 1.1)]) * expo
    img *= _gray3(gain)
    np.maximum(img, 0, out=img)
    # gamma 2 by sqrt. The sqrt is variance-stabilising for shot noise, so sensor noise of
    # constant sigma added after it behaves like noise growing with the square root of the
    # signal before it. White balance, exposure and the rest of the tone curve: one LUT.
    g = cv2.sqrt(img)
    cv2.scaleAdd(_window(rng, _tiles()[1], H, W), rng.uniform(0.004, 0.016), g, dst=g)
    out = cv2.LUT(cv2.convertScaleAbs(g, alpha=255), _tone_lut(rng, wb))
    r = rng.random()
    if r < 0.25:                                 # lens softness
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 0.8))
    elif r < 0.65:                               # in-camera sharpening (unsharp mask)
        k = rng.uniform(0.3, 0.9)
        out = cv2.addWeighted(out, 1 + k, cv2.GaussianBlur(out, (0, 0), rng.uniform(0.8, 1.5)), -k, 0)
    q = int(rng.integers(p.jpeg_quality_min, p.jpeg_quality_max + 1))
    info = {"background": bgname, **fl, "spiders": [pl[1] for pl, _ in placed if pl[0] == "spider"]}
    return out, mask, objects, q, info


def _tone_lut(rng, wb) -> np.ndarray:
    """Per-channel 8-bit LUT on sqrt-encoded values: white balance and exposure (gains on the
    linear values), the rest of a gamma of 2.0-2.4 and an S-curve. Shape 256x1x3."""
    x = np.linspace(0, 1, 256, dtype=np.float64)[:, None] * np.sqrt(np.asarray(wb))[None, :]
    g = rng.uniform(2.0, 2.4)
    y = np.minimum(x, 1.0) ** (2 / g)
    c = rng.uniform(0.25, 0.8)                  # S-curve contrast
    y = y + c * (y - 0.5) * (1 - np.abs(2 * y - 1)) * 0.5
    return np.clip(y * 255 + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)


def _composite(img, mask, patch: _Patch, label: int, light, on_web: bool) -> list | None:
    """Shadow + object into img, its label into mask; returns the object's tight box."""
    H, W = mask.shape
    h, w = patch.A.shape
    # soft shadow: the silhouette moved away from the light and blurred, plus a tight contact
    # shadow; both are smooth, so they are made at half resolution
    d = patch.height
    sx, sy = -light[0] / max(light[2], 0.3) * d, -light[1] / max(light[2], 0.3) * d
    blur = max(0.8, d * 0.6) * (3 if on_web else 1)
    pad = int(abs(sx) + abs(sy) + 3 * blur + 4) // 2 * 2 + 2
    hb, wb = (h + 2 * pad) // 2, (w + 2 * pad) // 2
    small = np.zeros((hb, wb), np.float32)
    a2 = cv2.resize(patch.A, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    small[pad // 2:pad // 2 + a2.shape[0], pad // 2:pad // 2 + a2.shape[1]] = a2
    ix, iy = int(round(sx / 2)), int(round(sy / 2))
    moved = np.zeros_like(small)
    moved[max(0, iy):hb + min(0, iy), max(0, ix):wb + min(0, ix)] = \
        small[max(0, -iy):hb - max(0, iy), max(0, -ix):wb - max(0, ix)]
    strength = 0.25 if on_web else 0.75
    shadow = _blur(moved, blur / 2) * np.float32(strength)
    if not on_web:
        shadow += _blur(small, max(0.5, d * 0.12)) * np.float32(0.3)
    np.minimum(shadow, 0.85, out=shadow)
    shadow = cv2.resize(shadow, (wb * 2, hb * 2), interpolation=cv2.INTER_LINEAR)
    X0, Y0 = patch.x0 - pad, patch.y0 - pad
    # one pass: background * (1 - shadow) * (1 - coverage) + premultiplied colour
    keep = 1 - shadow
    keep[pad:pad + h, pad:pad + w] *= 1 - patch.A

    def darken(reg, sl):
        reg *= _gray3(keep[sl])
    _apply(img, X0, Y0, darken, keep.shape)

    def over(reg, sl):
        reg += patch.C[sl]
    _apply(img, patch.x0, patch.y0, over, shape=(h, w))
    # mask: the object's coverage above threshold
    x0, y0 = max(0, patch.x0), max(0, patch.y0)
    x1, y1 = min(W, patch.x0 + w), min(H, patch.y0 + h)
    if x1 <= x0 or y1 <= y0:
        return None
    sub = patch.A[y0 - patch.y0:y1 - patch.y0, x0 - patch.x0:x1 - patch.x0] > _MASK_ALPHA
    mask[y0:y1, x0:x1][sub] = label
    ys, xs = np.nonzero(mask[y0:y1, x0:x1] == label)
    if len(xs) == 0:
        return None
    return [float(x0 + xs.min()), float(y0 + ys.min()), float(x0 + xs.max() + 1), float(y0 + ys.max() + 1)]


def _apply(img, X0, Y0, fn, shape) -> None:
    """Call fn(image region, matching slice of a patch of `shape` placed at (X0, Y0)),
    clipped to the image."""
    H, W = img.shape[:2]
    hh, ww = shape
    x0, y0 = max(0, X0), max(0, Y0)
    x1, y1 = min(W, X0 + ww), min(H, Y0 + hh)
    if x1 <= x0 or y1 <= y0:
        return
    fn(img[y0:y1, x0:x1], (slice(y0 - Y0, y1 - Y0), slice(x0 - X0, x1 - X0)))


# =========================================================================== items + duplicates
def _encode(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 always encodes a uint8 RGB array
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _boxes_from_mask(mask: np.ndarray, objects: list) -> list:
    """Tight boxes recomputed from the label map; objects that vanished are dropped."""
    out = []
    for o in objects:
        ys, xs = np.nonzero(mask == o.label)
        if len(xs):
            out.append(SyntheticObject(o.cls, [float(xs.min()), float(ys.min()), float(xs.max() + 1),
                                               float(ys.max() + 1)], o.label))
    return out


def _block_roles(p: SyntheticParams, seed: int, block: int) -> list:
    """Who is what in one block of indices: None (plain), ("orig",) or ("dup", orig_index).
    Planned from (seed, block) alone so a larger count extends the set unchanged."""
    rng = np.random.default_rng([seed, 0xD0B, block])
    f = p.dup_fraction
    q = min(1.0, f / max(1e-6, 1 - 1.3 * f))   # originals consume ~2.3 slots each
    roles: list = [None] * _BLOCK
    for s in range(_BLOCK):
        if roles[s] is not None or rng.random() >= q:
            continue
        free = [t for t in range(s + 1, _BLOCK) if roles[t] is None]
        n = min(1 if rng.random() < 0.7 else 2, len(free))
        if n == 0:
            continue
        roles[s] = ("orig",)
        for t in rng.choice(free, n, replace=False):
            roles[int(t)] = ("dup", block * _BLOCK + s)
    return roles


def _make_original(p: SyntheticParams, seed: int, index: int, role) -> SyntheticImage:
    rgb, mask, objects, q, info = render(p, seed, index)
    jpeg = _encode(rgb, q)
    return SyntheticImage(image_id(index), index, jpeg, (rgb.shape[1], rgb.shape[0]), mask, objects,
                          dup_group=dup_group_id(index) if role else None, dup_of=None, kind=info)


def _make_duplicate(p: SyntheticParams, seed: int, index: int, orig: SyntheticImage) -> SyntheticImage:
    """A near-duplicate of `orig` as a re-upload would make it: decoded, slightly cropped or
    shifted, rescaled, brightness/contrast changed, re-encoded at another quality."""
    rng = np.random.default_rng([seed, index])
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(orig.jpeg, np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    H, W = img.shape[:2]
    m = rng.uniform(0.0, 0.03, 4)
    x0, y0 = int(m[0] * W), int(m[1] * H)
    x1, y1 = W - int(m[2] * W), H - int(m[3] * H)
    img = img[y0:y1, x0:x1]
    mask = orig.mask[y0:y1, x0:x1]
    h, w = img.shape[:2]
    lo = max(p.min_size / min(h, w), 0.7)
    hi = min(p.max_size / max(h, w), 1.15)
    s = float(rng.uniform(lo, hi)) if hi >= lo else lo
    nw, nh = max(1, int(math.ceil(w * s))), max(1, int(math.ceil(h * s)))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
    if max(nw, nh) > p.max_size:   # both size bounds could not hold by scaling: crop the excess
        cx0, cy0 = (nw - min(nw, p.max_size)) // 2, (nh - min(nh, p.max_size)) // 2
        nw, nh = min(nw, p.max_size), min(nh, p.max_size)
        img, mask = img[cy0:cy0 + nh, cx0:cx0 + nw], mask[cy0:cy0 + nh, cx0:cx0 + nw]
    gain, bias = rng.uniform(0.85, 1.18), rng.uniform(-12, 12)
    img = cv2.convertScaleAbs(img, alpha=gain, beta=bias)
    q = int(rng.integers(p.jpeg_quality_min, p.jpeg_quality_max + 1))
    jpeg = _encode(img, q)
    return SyntheticImage(image_id(index), index, jpeg, (nw, nh), mask,
                          _boxes_from_mask(mask, orig.objects), dup_group=orig.dup_group,
                          dup_of=orig.id, kind={**orig.kind, "duplicate": True})


def make_item(p: SyntheticParams, seed: int, index: int, _cache: dict | None = None) -> SyntheticImage:
    """Image `index` of the set for `seed` (the same whatever the count)."""
    role = _block_roles(p, seed, index // _BLOCK)[index % _BLOCK]
    if role is not None and role[0] == "dup":
        o = role[1]
        orig = _cache.get(o) if _cache is not None else None
        if orig is None:
            orig = _make_original(p, seed, o, ("orig",))
        return _make_duplicate(p, seed, index, orig)
    return _make_original(p, seed, index, role)


def generate(p: SyntheticParams, seed: int) -> Iterator[SyntheticImage]:
    """Exactly `p.count` images, in index order; item i depends only on (seed, i)."""
    cache: dict = {}
    for i in range(p.count):
        if i % _BLOCK == 0:
            cache.clear()                    # originals and their duplicates share a block
        item = make_item(p, seed, i, cache)
        if item.dup_group and item.dup_of is None:
            cache[i] = item
        yield item


def draw_spider(rgb: np.ndarray, rng: np.random.Generator, span: float, center: tuple,
                rot: float | None = None, kind: str | None = None, mask: np.ndarray | None = None,
                label: int = 1) -> list | None:
    """Draw one spider (legs included, `span` pixels across) onto an existing uint8 RGB image,
    in place, with its soft shadow; mark it in `mask` (uint8 label map) if given. Returns its
    tight box [x0, y0, x1, y1] (x1/y1 exclusive), or None if it fell outside the image.
    For tests and tools that need a spider on a background of their own."""
    if kind is None:
        kind = str(rng.choice(_KIND_NAMES, p=_KIND_WEIGHTS / _KIND_WEIGHTS.sum()))
    if rot is None:
        rot = float(rng.uniform(0, 2 * math.pi))
    az = rng.uniform(0, 2 * math.pi)
    light = np.array([0.5 * math.cos(az), 0.5 * math.sin(az), 0.75], np.float32)
    model = _spider_model(rng, kind)
    ext = _transform(_spider_extent(model), 1.0, rot, 0, 0)
    unit = span / float(np.max(np.ptp(_spider_extent(model), axis=0)))
    cen = (ext.max(0) + ext.min(0)) / 2 * unit
    img = (rgb.astype(np.float32) * np.float32(1 / 255)) ** 2          # to linear
    m = np.zeros(rgb.shape[:2], np.uint8) if mask is None else mask
    patch = _render_spider(rng, kind, model, span, rot, center[0] - cen[0], center[1] - cen[1], light)
    box = _composite(img, m, patch, label, light, on_web=False)
    rgb[...] = cv2.convertScaleAbs(cv2.sqrt(np.maximum(img, 0)), alpha=255)
    return box


# =========================================================================== looking at it
_BOX_COLORS = {SPIDER: (230, 40, 40), CATERPILLAR: (40, 120, 255), LEAF: (255, 200, 0)}


def sample_grid(p: SyntheticParams, seed: int, count: int = 24, cols: int = 6, cell: int = 256,
                boxes: bool = False, labels: bool = True):
    """The first `count` images of the set as a contact sheet (PIL RGB, through
    `sheets.grid`), each fitted into a `cell` square; truth boxes drawn when `boxes` (red
    spider, blue caterpillar, yellow leaf), lines about 1 px at sheet scale."""
    import dataclasses

    from PIL import Image

    from spidergan import sheets

    q = dataclasses.replace(p, count=count)
    pics, tags = [], []
    for item in generate(q, seed):
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(item.jpeg, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        if boxes:
            width = max(1, round(max(img.shape[:2]) / cell))
            for o in item.objects:
                x0, y0, x1, y1 = (int(round(v)) for v in o.box)
                cv2.rectangle(img, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), _BOX_COLORS[o.cls], width)
        pics.append(Image.fromarray(img))
        tags.append(item.id + (f" dup of {item.dup_of[-5:]}" if item.dup_of else ""))
    return sheets.grid(pics, cols=cols, cell=cell, labels=tags if labels else None)
