"""StyleGAN2 losses: non-saturating logistic loss, lazy R1 and lazy path-length regularisation.

Every image the discriminator sees, real or generated, goes through the augmentation pipe
first (ADA: "augment everything D sees"); G's own output is never augmented. R1 is the
gradient penalty on the *un-augmented* real images, taken through the (differentiable) pipe.
Lazy regularisation (StyleGAN2 appendix B): the regulariser runs every `interval` steps with its
loss multiplied by `interval`; the optimisers' lr and betas are corrected in train.py.

All quantities stay on the device: the returned dict holds detached tensors, nothing calls
`.item()`, so no step waits for the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class StyleGAN2Loss:
    def __init__(self, G, D, augment_pipe=None, style_mixing: float = 0.9, r1_gamma: float = 1.0,
                 pl_weight: float = 2.0, pl_batch_shrink: int = 2, pl_decay: float = 0.01):
        self.G, self.D, self.augment_pipe = G, D, augment_pipe
        self.style_mixing, self.r1_gamma = style_mixing, r1_gamma
        self.pl_weight, self.pl_batch_shrink, self.pl_decay = pl_weight, pl_batch_shrink, pl_decay
        dev = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=dev)
        # mean of the path lengths over the whole (multi-process) batch; train.py sets it
        self.batch_mean = lambda x: x

    # ------------------------------------------------------------------ helpers
    def run_G(self, z: torch.Tensor, update_w_avg: bool = True):
        ws = self.G.mapping(z, update_w_avg=update_w_avg)
        if self.style_mixing > 0:
            # one crossover point per batch, chosen on the device (no host sync): layers from
            # `cutoff` on take their w from a second latent; with prob 1 - p there is no mixing
            n = ws.shape[1]
            cutoff = torch.randint(1, n, [], device=ws.device)
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing, cutoff,
                                 torch.full_like(cutoff, n))
            ws2 = self.G.mapping(torch.randn_like(z), update_w_avg=False)
            mix = (torch.arange(n, device=ws.device) >= cutoff).reshape(1, n, 1)
            ws = torch.where(mix, ws2, ws)
        return self.G.synthesis(ws), ws

    def run_D(self, img: torch.Tensor) -> torch.Tensor:
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img)

    # ------------------------------------------------------------------ phases
    def g_main(self, z: torch.Tensor) -> torch.Tensor:
        img, _ = self.run_G(z)
        logits = self.run_D(img)
        return F.softplus(-logits).mean()  # non-saturating: -log sigmoid(D(G(z)))

    def g_pl(self, z: torch.Tensor, gain: float, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Path-length regulariser: |J^T y| should stay near its running mean (StyleGAN2 3.2).

        `noise`: the random image-space directions y (shape of the images of z[:n]); drawn
        here when not given (train.py passes its slice of a batch-wide draw)."""
        n = max(z.shape[0] // self.pl_batch_shrink, 1)
        img, ws = self.run_G(z[:n])
        if noise is None or noise.shape != img.shape:
            noise = torch.randn_like(img)
        noise = noise / math.sqrt(img.shape[2] * img.shape[3])
        grads, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        pl_mean = self.pl_mean.lerp(self.batch_mean(lengths.mean()), self.pl_decay)
        self.pl_mean = pl_mean.detach()
        penalty = (lengths - pl_mean).square()
        # the 0 * img term keeps every synthesis parameter in the graph
        return (img[:, 0, 0, 0] * 0 + penalty * self.pl_weight).mean() * gain

    def d_main(self, z: torch.Tensor, real: torch.Tensor):
        with torch.no_grad():
            fake, _ = self.run_G(z, update_w_avg=False)
        fake_logits = self.run_D(fake)
        real_logits = self.run_D(real)
        loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        return loss, real_logits.detach(), fake_logits.detach()

    def d_r1(self, real: torch.Tensor, gain: float) -> torch.Tensor:
        """R1: squared gradient norm of D at the real images, weighted gamma / 2."""
        real = real.detach().requires_grad_(True)
        logits = self.run_D(real)
        grads, = torch.autograd.grad(logits.sum(), real, create_graph=True)
        penalty = grads.square().sum(dim=[1, 2, 3])
        return (logits * 0 + penalty.unsqueeze(1) * (self.r1_gamma / 2)).mean() * gain
