"""Differentiable augmentation for everything the discriminator sees, and the ADA controller.

Follows the design of Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data" (ADA), written from the paper, not from any implementation:

* Each operation is applied to each image independently with probability p. An operation
  whose random parameter is drawn from a symmetric distribution that contains the identity
  (x-flip picks "flip or not", rotate90 picks one of four quarter turns) keeps the
  augmented distribution "non-leaking": as long as p < 1 the generator cannot profit from
  drawing augmented-looking images, and D still sees the un-augmented images often enough.
* All geometric operations of one image (blit: x-flip, 90-degree rotation, integer
  translation; geom: isotropic scale, rotation, anisotropic scale, fractional translation)
  are composed into ONE 3x3 matrix and resampled with ONE `grid_sample`, so the image is
  interpolated once, whatever fired. Out-of-image samples come from the mirror image
  (`padding_mode="reflection"`, i.e. symmetric padding about the pixel edges, repeated as far
  as needed): no black borders for D to key on, and nothing wraps around from the opposite
  border.
* All colour operations (brightness, contrast, luma flip, hue rotation, saturation) are
  composed into one 4x4 matrix on (r, g, b, 1) per image.
* Cutout zeroes (mid-grey in [-1, 1]) a square of half the image side at a random centre.

Resampling (`filter`, `train.augment_filter`; see warp.py): "bilinear" samples once at 1x;
"antialias" upsamples 2x with the paper's 12-tap Symlet-6 low-pass, samples, and downsamples.
Bilinear halves the gradient energy of an edge image after a half-pixel shift (0.258 -> 0.125
on a 32 px four-quadrant image), the 2x path keeps most of it (0.203); it costs about three
times as much on CPU, so it is the default on CUDA and bilinear on CPU. With either, blit operations
(flip, quarter turns, integer shifts) land exactly on pixel centres. The geometry runs in
float32 even under bf16 autocast.

Paper default strengths (Appendix, the pseudo-code's constants), which are ours:
    xint_max 0.125 (of image size), scale_std 0.2 (log2 lognormal), rotate_max 1 (x pi),
    aniso_std 0.2 (log2), xfrac_std 0.125 (of image size), brightness_std 0.2,
    contrast_std 0.5 (log2), hue_max 1 (x pi), saturation_std 1 (log2), cutout_size 0.5.
Arbitrary rotation is applied twice (before and after anisotropic scaling), each with
probability 1 - sqrt(1 - p), so that "some rotation" happens with probability p, as in the paper.

`forward` never synchronises with the host (no `.item()`, no data-dependent Python
branches): p stays a device tensor, and images whose ops did not fire are passed through with
`torch.where`, which makes p = 0 a bit-exact identity.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from spidergan.gan import warp as warp_mod

GROUPS: dict[str, tuple[str, ...]] = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
    "cutout": ("cutout",),
}
GEOMETRIC_OPS = GROUPS["blit"] + GROUPS["geom"]
COLOR_OPS = GROUPS["color"]
ALL_OPS = GEOMETRIC_OPS + COLOR_OPS + GROUPS["cutout"]

AUGPIPES: dict[str, tuple[str, ...]] = {
    "blit": ("blit",),
    "geom": ("geom",),
    "color": ("color",),
    "cutout": ("cutout",),
    "bg": ("blit", "geom"),
    "bgc": ("blit", "geom", "color"),
    "bgcc": ("blit", "geom", "color", "cutout"),
}

DEFAULT_STRENGTHS: dict[str, float] = {
    "xint_max": 0.125,
    "scale_std": 0.2,
    "rotate_max": 1.0,
    "aniso_std": 0.2,
    "xfrac_std": 0.125,
    "brightness_std": 0.2,
    "contrast_std": 0.5,
    "hue_max": 1.0,
    "saturation_std": 1.0,
    "cutout_size": 0.5,
}

# unit luma axis in RGB: colour ops that "keep luma" act in the plane orthogonal to it
_LUMA = (1.0 / math.sqrt(3.0),) * 3


def resolve_ops(augpipe: str) -> tuple[str, ...]:
    """Operation names of an augpipe: a name in AUGPIPES, or '+'-joined group/operation names.

    "bgc" -> blit, geom and color; "xint+xfrac" -> just those two operations (tests, previews).
    """
    if augpipe in ("", "none"):
        return ()
    if augpipe in AUGPIPES:
        parts = [op for g in AUGPIPES[augpipe] for op in GROUPS[g]]
    else:
        parts = []
        for name in augpipe.split("+"):
            name = name.strip()
            if name in AUGPIPES:
                parts += [op for g in AUGPIPES[name] for op in GROUPS[g]]
            elif name in ALL_OPS:
                parts.append(name)
            else:
                raise ValueError(f"unknown augpipe {augpipe!r}: {name!r} is neither a pipe "
                                 f"({', '.join(AUGPIPES)}) nor an operation ({', '.join(ALL_OPS)})")
    return tuple(op for op in ALL_OPS if op in parts)  # canonical order, no duplicates


# --------------------------------------------------------------------------- matrices
def _eye(n: int, batch: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, device=ref.device, dtype=ref.dtype).expand(batch, n, n).clone()


def _mat3(rows) -> torch.Tensor:
    """Batch of 3x3 matrices from a 3x3 nested list of [B] tensors (no host-to-device copies)."""
    return torch.stack([torch.stack(list(r), dim=-1) for r in rows], dim=-2)


def _translate(tx, ty):
    z, o = torch.zeros_like(tx), torch.ones_like(tx)
    return _mat3([[o, z, tx], [z, o, ty], [z, z, o]])


def _scale(sx, sy):
    z, o = torch.zeros_like(sx), torch.ones_like(sx)
    return _mat3([[sx, z, z], [z, sy, z], [z, z, o]])


def _rotate(cos, sin):
    z, o = torch.zeros_like(cos), torch.ones_like(cos)
    return _mat3([[cos, -sin, z], [sin, cos, z], [z, z, o]])


class AugmentPipe(torch.nn.Module):
    """Augment a batch of NCHW images in [-1, 1]; each op fires per image with probability p.

    `augpipe` names the groups (see AUGPIPES, or '+'-joined group/op names); `strengths`
    override DEFAULT_STRENGTHS. `self.p` is a 0-dim float32 buffer (saved in state_dict; the
    ADA controller moves it in place); move the pipe to the images' device (`pipe.to(device)`),
    or p is copied to it on every call. With `record = True` each call leaves in `self.last`
    which ops fired per image and the geometric/colour matrices used (tests, debugging).
    """

    def __init__(self, augpipe: str = "bgc", p: float = 0.0, filter: str = "bilinear",
                 **strengths):
        super().__init__()
        if filter not in warp_mod.FILTERS:
            raise ValueError(f"unknown augment filter {filter!r}; known: "
                             f"{', '.join(warp_mod.FILTERS)}")
        self.filter = filter
        unknown = set(strengths) - set(DEFAULT_STRENGTHS)
        if unknown:
            raise TypeError(f"unknown augmentation strength(s) {sorted(unknown)}; "
                            f"known: {sorted(DEFAULT_STRENGTHS)}")
        self.strengths = {**DEFAULT_STRENGTHS, **{k: float(v) for k, v in strengths.items()}}
        bad = [k for k, v in self.strengths.items() if not v >= 0]
        if bad:
            raise ValueError(f"augmentation strengths must be >= 0: {bad}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.augpipe = augpipe
        self.ops = resolve_ops(augpipe)
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32))
        self.record = False
        self.last: dict[str, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (f"augpipe={self.augpipe!r}, ops={','.join(self.ops) or 'none'}, "
                f"filter={self.filter}")

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected NCHW images, got shape {tuple(images.shape)}")
        if not self.ops:
            return images
        # matrices, sampling and colour maths in float32 also under bf16 autocast (matmul and
        # affine_grid would otherwise run in bf16: sample positions up to ~2 px off at 512 px)
        with warp_mod.full_precision(images.device):
            out = self._augment(images.float(), generator)
        return out.to(images.dtype)

    def _augment(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, c, h, w = images.shape
        dev = images.device
        p = self.p.to(device=dev, dtype=torch.float32)
        s = self.strengths
        rec: dict[str, torch.Tensor] = {}

        def rand(*shape):
            return torch.rand(*shape, device=dev, generator=generator)

        def randn(*shape):
            return torch.randn(*shape, device=dev, generator=generator)

        def fires(op: str, prob=None) -> torch.Tensor:
            # every op of an enabled group draws, even one left out of the pipe, so which ops
            # fire on an image does not depend on which of its group's siblings are enabled
            f = rand(n) < (p if prob is None else prob)
            f = f & (op in self.ops)
            rec[op] = f
            return f

        def pick(f, value, identity):
            return torch.where(f, value, torch.full_like(value, identity))

        x = images
        geo_ops = [op for op in GEOMETRIC_OPS if op in self.ops]
        if geo_ops:
            # Forward transforms T_k act on centred pixel coordinates (x right, y down); the
            # sampler needs the inverse, accumulated as inv = T_1^-1 T_2^-1 ... T_k^-1.
            inv = _eye(3, n, p)
            one = torch.ones(n, device=dev)

            f = fires("xflip")
            flip = (rand(n) < 0.5) & f
            inv = inv @ _scale(torch.where(flip, -one, one), one)

            f = fires("rotate90")
            k = torch.floor(rand(n) * 4).clamp(max=3)
            k = torch.where(f, k, torch.zeros_like(k))
            # exact integer cos/sin for quarter turns, so blit lands on pixel centres
            cos = (k == 0).float() - (k == 2).float()
            sin = (k == 1).float() - (k == 3).float()
            inv = inv @ _rotate(cos, -sin)

            f = fires("xint")
            t = (rand(n, 2) * 2 - 1) * s["xint_max"]
            tx = torch.round(t[:, 0] * w) * f
            ty = torch.round(t[:, 1] * h) * f
            inv = inv @ _translate(-tx, -ty)

            f = fires("scale")
            sc = pick(f, torch.exp2(randn(n) * s["scale_std"]), 1.0)
            inv = inv @ _scale(1 / sc, 1 / sc)

            p_rot = 1 - torch.sqrt((1 - p).clamp(min=0))
            f = fires("rotate", p_rot)
            th = pick(f, (rand(n) * 2 - 1) * math.pi * s["rotate_max"], 0.0)
            inv = inv @ _rotate(torch.cos(th), -torch.sin(th))

            f = fires("aniso")
            an = pick(f, torch.exp2(randn(n) * s["aniso_std"]), 1.0)
            inv = inv @ _scale(1 / an, an)

            f2 = rand(n) < p_rot  # second rotation, after the anisotropic scale
            f2 = f2 & ("rotate" in self.ops)
            rec["rotate"] = rec["rotate"] | f2
            th2 = pick(f2, (rand(n) * 2 - 1) * math.pi * s["rotate_max"], 0.0)
            inv = inv @ _rotate(torch.cos(th2), -torch.sin(th2))

            f = fires("xfrac")
            tf = randn(n, 2) * s["xfrac_std"]
            inv = inv @ _translate(-pick(f, tf[:, 0] * w, 0.0), -pick(f, tf[:, 1] * h, 0.0))

            geo_fired = torch.zeros(n, dtype=torch.bool, device=dev)
            for op in geo_ops:
                geo_fired = geo_fired | rec[op]
            # normalised grid coordinates (align_corners=False) <-> centred pixel coordinates
            # (built with fills, not torch.tensor(list, device=...): that would be a blocking copy)
            d = torch.ones(3, device=dev)
            d[0], d[1] = w / 2, h / 2
            theta = (inv * d[None, None, :] / d[None, :, None])[:, :2, :]
            warped = warp_mod.warp(x, theta, self.filter)  # float32 inside, also under autocast
            x = torch.where(geo_fired[:, None, None, None], warped, x)
            rec["geom_inverse"] = inv
            rec["geom_theta"] = theta

        col_ops = [op for op in COLOR_OPS if op in self.ops]
        if col_ops:
            if c != 3:
                raise ValueError(f"colour augmentation needs 3 channels, got {c}")
            m = _eye(4, n, p)
            eye4 = _eye(4, n, p)
            v = torch.full((4,), _LUMA[0], device=dev)
            v[3] = 0.0
            vv = torch.outer(v, v).expand(n, 4, 4)

            f = fires("brightness")
            b = pick(f, randn(n) * s["brightness_std"], 0.0)
            tb = eye4.clone()
            tb[:, :3, 3] = b[:, None]
            m = tb @ m

            f = fires("contrast")
            ct = pick(f, torch.exp2(randn(n) * s["contrast_std"]), 1.0)
            tc = eye4.clone()
            tc[:, :3, :3] *= ct[:, None, None]
            m = tc @ m

            f = fires("lumaflip")
            i = ((rand(n) < 0.5) & f).float()
            m = (eye4 - 2 * vv * i[:, None, None]) @ m  # reflect about the plane normal to luma

            f = fires("hue")
            th = pick(f, (rand(n) * 2 - 1) * math.pi * s["hue_max"], 0.0)
            m = _rotate_about_luma(th) @ m

            f = fires("saturation")
            sat = pick(f, torch.exp2(randn(n) * s["saturation_std"]), 1.0)
            ts = vv + (eye4 - vv) * sat[:, None, None]
            ts[:, 3, 3] = 1.0
            m = ts @ m

            col_fired = torch.zeros(n, dtype=torch.bool, device=dev)
            for op in col_ops:
                col_fired = col_fired | rec[op]
            mm = m.to(x.dtype)
            recolored = torch.einsum("nij,njhw->nihw", mm[:, :3, :3], x) + mm[:, :3, 3, None, None]
            x = torch.where(col_fired[:, None, None, None], recolored, x)
            rec["color_matrix"] = m

        if "cutout" in self.ops:
            f = fires("cutout")
            centre = rand(n, 2)
            half = s["cutout_size"] / 2
            ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
            xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
            inside_x = (xs[None, :] - centre[:, 0, None]).abs() < half
            inside_y = (ys[None, :] - centre[:, 1, None]).abs() < half
            cut = inside_y[:, :, None] & inside_x[:, None, :] & f[:, None, None]
            x = torch.where(cut[:, None], torch.zeros_like(x), x)
            rec["cutout_centre"] = centre

        if self.record:
            self.last = {k: v.detach() for k, v in rec.items() if k in self.ops or k not in ALL_OPS}
        return x


def _rotate_about_luma(theta: torch.Tensor) -> torch.Tensor:
    """4x4 homogeneous rotations by theta about the luma axis (Rodrigues' formula)."""
    n = theta.shape[0]
    a = _LUMA[0]  # all three components of the unit luma axis are equal
    vv = torch.full((3, 3), a * a, device=theta.device)
    kx = torch.zeros(3, 3, device=theta.device)  # cross-product matrix [v]x
    kx[0, 1], kx[0, 2], kx[1, 2] = -a, a, -a
    kx[1, 0], kx[2, 0], kx[2, 1] = a, -a, a
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    r3 = cos * torch.eye(3, device=theta.device) + sin * kx + (1 - cos) * vv
    out = torch.eye(4, device=theta.device).expand(n, 4, 4).clone()
    out[:, :3, :3] = r3
    return out


# --------------------------------------------------------------------------- ADA controller
class AdaController:
    """Adaptive p (ADA): raise p while D is over-confident on reals, lower it otherwise.

    The overfitting heuristic r_t = E[sign(D(real))] is accumulated on the device without host
    syncs. Every `interval` steps: p += sign(r_t - target) * batch * interval / (ada_kimg * 1000),
    clamped to [0, 1], so p can cross the whole range in ada_kimg thousand real images.
    """

    def __init__(self, target: float = 0.6, ada_kimg: float = 500, interval: int = 4):
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"ada target must lie in [0, 1], got {target}")
        if not ada_kimg > 0:
            raise ValueError(f"ada_kimg must be > 0, got {ada_kimg}")
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.target = float(target)
        self.ada_kimg = float(ada_kimg)
        self.interval = int(interval)
        self._stats: torch.Tensor | None = None  # [sum of sign(logit), count], on the logits' device

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add one batch of D's logits on real images (any shape; detached)."""
        lg = real_logits.detach().float()
        batch = torch.stack([torch.sign(lg).sum(), torch.full((), float(lg.numel()), device=lg.device)])
        if self._stats is None:
            self._stats = torch.zeros(2, device=lg.device, dtype=torch.float64)
        elif self._stats.device != lg.device:  # e.g. restored on the CPU, training on CUDA
            self._stats = self._stats.to(lg.device)
        self._stats += batch.double()

    def stats_tensor(self) -> torch.Tensor:
        """The live [sum, count] accumulator (float64). A DDP caller all_reduces it in place
        (SUM) before `step`, which then reads the global statistics."""
        if self._stats is None:
            self._stats = torch.zeros(2, dtype=torch.float64)
        return self._stats

    def step_size(self, batch_size: int) -> float:
        return batch_size * self.interval / (self.ada_kimg * 1000)

    def step(self, pipe: AugmentPipe, batch_size: int, step_index: int) -> dict | None:
        """Call after every training step; `step_index` is the 0-based index of the step just
        done and `batch_size` the global number of reals per step. Acts when
        (step_index + 1) % interval == 0 (and something was accumulated): moves `pipe.p` in
        place, resets the accumulators and returns {"p": float, "rt": float} for logging
        (this, once per interval, is the only host sync). Otherwise returns None.
        """
        if (step_index + 1) % self.interval != 0 or self._stats is None:
            return None
        stats = self._stats.to(pipe.p.device, copy=True)  # a copy: reset below
        count = stats[1]
        rt = stats[0] / count.clamp(min=1)
        adjust = torch.sign(rt - self.target) * (count > 0) * self.step_size(batch_size)
        with torch.no_grad():
            pipe.p.copy_((pipe.p.double() + adjust).clamp(0.0, 1.0).to(pipe.p.dtype))
        self._stats.zero_()
        if not float(count) > 0:
            return None
        return {"p": float(pipe.p), "rt": float(rt)}

    def state_dict(self) -> dict:
        stats = self.stats_tensor().detach().cpu().clone()
        return {"target": self.target, "ada_kimg": self.ada_kimg, "interval": self.interval,
                "stats": stats}

    def load_state_dict(self, state: dict) -> None:
        self.target = float(state["target"])
        self.ada_kimg = float(state["ada_kimg"])
        self.interval = int(state["interval"])
        device = self._stats.device if self._stats is not None else "cpu"
        self._stats = torch.as_tensor(state["stats"], dtype=torch.float64).to(device).clone()


# --------------------------------------------------------------------------- preview
def preview_grid(images: torch.Tensor, augpipe: str, ps: list[float], seed: int,
                 filter: str = "bilinear", **strengths):
    """A PIL image: the same real images as D sees them, one row per p.

    The first row holds the originals (p = 0); then one row per distinct p in `ps` (in the
    given order, p = 0 skipped), each labelled. Every row uses the same random draws, so a
    higher p fires a superset of the operations of a lower one on each image.
    """
    from PIL import Image, ImageDraw

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected N x 3 x H x W images, got {tuple(images.shape)}")
    rows_p: list[float] = []
    for q in ps:
        q = float(q)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {q}")
        if q != 0.0 and all(abs(q - r) > 1e-9 for r in rows_p):
            rows_p.append(q)
    images = images.detach().float().cpu()
    n, _, h, w = images.shape
    pipe = AugmentPipe(augpipe, p=0.0, filter=filter, **strengths)
    rows = [("original", images)]
    with torch.no_grad():
        for q in rows_p:
            pipe.p.fill_(q)
            gen = torch.Generator().manual_seed(int(seed))
            rows.append((f"p={q:.2f}", pipe(images, generator=gen)))

    label_w, gap = 72, 2
    sheet = Image.new("RGB", (label_w + n * (w + gap), len(rows) * (h + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, batch) in enumerate(rows):
        y0 = r * (h + gap)
        draw.text((4, y0 + h // 2 - 6), label, fill=(0, 0, 0))
        arr = ((batch.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(n):
            sheet.paste(Image.fromarray(arr[i], "RGB"), (label_w + i * (w + gap), y0))
    return sheet


def load_images(folder: str | Path, count: int, resolution: int) -> torch.Tensor:
    """Up to `count` images found under `folder` (sorted by path), centre-cropped square and
    resized to `resolution`, as an N x 3 x R x R tensor in [-1, 1]. Undecodable files are skipped."""
    import numpy as np
    from PIL import Image

    from spidergan.images import ImageRejected, is_image_name, load_rgb

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist (pass --images DIR)")
    out = []
    for path in sorted(q for q in folder.rglob("*") if q.is_file() and is_image_name(q)):
        try:
            im = load_rgb(path)
        except ImageRejected:
            continue
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize(
            (resolution, resolution), Image.LANCZOS)
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
        if len(out) >= count:
            break
    if not out:
        raise FileNotFoundError(f"no decodable images under {folder} (pass --images DIR)")
    return torch.stack(out).float() / 127.5 - 1.0


def write_preview(out: str | Path, images: torch.Tensor, augpipe: str, ps: list[float],
                  seed: int, **strengths) -> Path:
    """Write `preview_grid(...)` atomically as a PNG; returns the path."""
    from spidergan.atomic import save_image

    out = Path(out)
    save_image(out, preview_grid(images, augpipe, ps, seed, **strengths))
    return out
