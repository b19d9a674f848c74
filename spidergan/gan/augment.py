"""PLACEHOLDER written in branch `gan` so the trainer can be wired and tested.

The real augmentation module (ADA pipeline: blit, geometric, colour, ...) is written in branch
`augment`; when merging, THIS FILE IS TO BE REPLACED by that one. It keeps the agreed API:

    AugmentPipe(augpipe="bgc", p=0.0, **strengths)   .p is a 0-dim buffer; forward(images)
    AdaController(target=0.6, ada_kimg=500, interval=4)  accumulate / stats_tensor / step /
                                                         state_dict / load_state_dict
    preview_grid(images, augpipe, ps, seed) -> PIL.Image

Placeholder behaviour: with probability p per image, an x-flip and a brightness shift (enough for
the trainer's tests to see p act and be restored on resume); the controller implements the ADA
rule r_t = E[sign(D(real))], p += sign(r_t - target) * batch * interval / (ada_kimg * 1000).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class AugmentPipe(torch.nn.Module):
    def __init__(self, augpipe: str = "bgc", p: float = 0.0, **strengths):
        super().__init__()
        self.augpipe = augpipe
        self.register_buffer("p", torch.tensor(float(p)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        dev = images.device
        flip = (torch.rand(n, 1, 1, 1, device=dev) < self.p).to(images.dtype)
        images = images * (1 - flip) + images.flip(3) * flip
        bright = (torch.rand(n, 1, 1, 1, device=dev) < self.p).to(images.dtype)
        return images + bright * torch.randn(n, 1, 1, 1, device=dev) * 0.2


class AdaController:
    def __init__(self, target: float = 0.6, ada_kimg: float = 500, interval: int = 4):
        self.target, self.ada_kimg, self.interval = target, ada_kimg, interval
        self._acc = torch.zeros(2)

    def accumulate(self, real_logits: torch.Tensor) -> None:
        if self._acc.device != real_logits.device:
            self._acc = self._acc.to(real_logits.device)
        s = real_logits.detach().sign()
        self._acc = self._acc + torch.stack([s.sum(), torch.tensor(float(s.numel()), device=s.device)])

    def stats_tensor(self) -> torch.Tensor:
        return self._acc

    def step(self, pipe: AugmentPipe, batch_size: int, step_index: int):
        if (step_index + 1) % self.interval:
            return None
        rt = self._acc[0] / self._acc[1].clamp(min=1)
        adjust = torch.sign(rt - self.target) * (batch_size * self.interval) / (self.ada_kimg * 1000)
        pipe.p.copy_((pipe.p + adjust.to(pipe.p.device)).clamp(min=0, max=1))
        self._acc = torch.zeros_like(self._acc)
        return {"p": pipe.p, "rt": rt}

    def state_dict(self) -> dict:
        return {"acc": self._acc.detach().cpu().clone()}

    def load_state_dict(self, d: dict) -> None:
        self._acc = d["acc"].clone()


def preview_grid(images: torch.Tensor, augpipe: str, ps, seed: int) -> Image.Image:
    rows = []
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for p in ps:
            pipe = AugmentPipe(augpipe, p=float(p))
            with torch.no_grad():
                rows.append(pipe(images.float()))
    finally:
        torch.random.set_rng_state(gen_state)
    x = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # C, rows*H, cols*W
    a = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(a))
