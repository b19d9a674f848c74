"""Inference: images from a trained checkpoint's G_ema (`spidergan generate`, evaluate, and
the training loop's sample grids all draw through the helpers here).

* one PNG per seed (the latent of seed s is the same as in the training sample grids),
* a grid of the seeds,
* a latent interpolation through the seeds in order (looping back to the first) as an
  animated GIF; interpolation is spherical in z, where the latents live on a shell.

`psi` is the truncation trick: w is pulled towards the average w by (1 - psi).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spidergan import atomic, sheets
from spidergan.gan import checkpoint
from spidergan.gan.networks import Generator


def to_uint8(images: torch.Tensor) -> np.ndarray:
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: torch.Tensor, cols: int) -> Image.Image:
    """Images at their own size, tiled edge to edge, `cols` per row (the sample grids)."""
    a = to_uint8(images)
    return sheets.grid([Image.fromarray(x) for x in a], cols=cols, cell=max(a.shape[1:3]), pad=0)


@torch.no_grad()
def generate_images(G, z: torch.Tensor, psi: float = 1.0, batch: int = 32,
                    noise_mode: str = "const") -> torch.Tensor:
    """Images for latents `z`, in chunks; const noise so fixed seeds give fixed pictures."""
    G.eval()
    dev = next(G.parameters()).device
    out = [G(z[i:i + batch].to(dev), truncation_psi=psi, noise_mode=noise_mode).cpu()
           for i in range(0, len(z), batch)]
    return torch.cat(out)


def seeded_z(seeds, z_dim: int) -> torch.Tensor:
    """One latent per seed, independent of everything else (grids, `spidergan generate`)."""
    return torch.stack([torch.from_numpy(np.random.RandomState(int(s)).randn(z_dim)).float()
                        for s in seeds])


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            a, b = int(a), int(b)
            if b < a:
                raise ValueError(f"seed range {part!r} runs backwards")
            seeds += list(range(a, b + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError("no seeds given")
    if any(s < 0 or s >= 2**32 for s in seeds):
        raise ValueError("seeds must be in [0, 2**32)")
    return seeds


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """G_ema from one of our checkpoints (loaded with weights_only=True)."""
    state = checkpoint.load(path, map_location=device)
    p = state["params"]
    G = Generator(z_dim=p["z_dim"], w_dim=p["w_dim"], img_resolution=p["resolution"],
                  mapping_layers=p["mapping_layers"], channel_base=p["channel_base"],
                  channel_max=p["channel_max"], conv_clamp=p.get("conv_clamp") or None)
    G.load_state_dict(state["G_ema"])
    return G.to(device).eval()


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def run(checkpoint_path: str | Path, out: str | Path, seeds: list[int], psi: float = 1.0,
        grid: bool = False, gif: bool = False, frames: int = 24, frame_ms: int = 80,
        noise_mode: str = "const", device: str = "cpu") -> list[Path]:
    """Write images for `seeds` into `out`; returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    G = load_generator(checkpoint_path, device)
    z = seeded_z(seeds, G.z_dim)
    written: list[Path] = []
    imgs = generate_images(G, z, psi=psi, noise_mode=noise_mode)
    for s, img in zip(seeds, imgs):
        path = out / f"seed{s:06d}.png"
        atomic.save_image(path, image_grid(img[None], 1))
        written.append(path)
    if grid:
        cols = math.ceil(math.sqrt(len(seeds)))
        path = out / "grid.png"
        atomic.save_image(path, image_grid(imgs, cols))
        written.append(path)
    if gif:
        if len(seeds) < 2:
            raise ValueError("an interpolation needs at least two seeds")
        keys = list(z) + [z[0]]
        path_z = [slerp(keys[i], keys[i + 1], t / frames)
                  for i in range(len(keys) - 1) for t in range(frames)]
        frames_t = generate_images(G, torch.stack(path_z), psi=psi, noise_mode=noise_mode)
        pics = [image_grid(f[None], 1) for f in frames_t]
        path = out / "interpolation.gif"
        atomic.save_image(path, pics[0], save_all=True, append_images=pics[1:],
                          duration=frame_ms, loop=0)
        written.append(path)
    return written
