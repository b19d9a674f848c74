"""What a training run is built from: backends and precision, networks, FreezeD, the lazily
regularised Adam optimisers and the exponential moving average of G."""

from __future__ import annotations

import torch

from spidergan.gan.networks import Discriminator, Generator
from spidergan.params import TrainParams


def use_bf16(p: TrainParams, device: torch.device) -> bool:
    if p.precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return p.precision == "bf16"


def r1_gamma(p: TrainParams) -> float:
    """train.r1_gamma, with auto = 0.0002 * resolution^2 / batch (ADA paper's heuristic)."""
    if p.r1_gamma == "auto":
        return 0.0002 * p.resolution ** 2 / p.batch
    return float(p.r1_gamma)


def ada_kimg(p: TrainParams) -> float:
    """train.ada_kimg, with auto = 500, or 100 when transfer learning (ADA paper: a pretrained
    D overfits sooner, so p must react faster)."""
    if p.ada_kimg == "auto":
        return 100.0 if p.resume_from else 500.0
    return float(p.ada_kimg)


def ema_rampup(p: TrainParams) -> float:
    """No ramp-up when transfer learning: the ramp would set G_ema := G at step 0 and throw
    the imported average away (the reference also turns it off when resuming from weights)."""
    return 0.0 if p.resume_from else p.ema_rampup


def augment_filter(p: TrainParams, device: torch.device) -> str:
    if p.augment_filter == "auto":
        return "antialias" if device.type == "cuda" else "bilinear"
    return p.augment_filter


def configure_backends(p: TrainParams, device: torch.device) -> None:
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = p.tf32
    torch.backends.cudnn.allow_tf32 = p.tf32
    torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms


def fast_modules(G, D, compile_: bool):
    """G (as .mapping / .synthesis / .parameters) and D for the main losses: torch.compile'd
    when asked. The regularisers keep the eager modules, because compiled graphs do not
    support the double backward of R1 and path length."""
    if not compile_:
        return G, D
    import types

    g = types.SimpleNamespace(mapping=torch.compile(G.mapping),
                              synthesis=torch.compile(G.synthesis), parameters=G.parameters)
    return g, torch.compile(D)


def build_networks(p: TrainParams, device: torch.device):
    clamp = p.conv_clamp or None
    G = Generator(z_dim=p.z_dim, w_dim=p.w_dim, img_resolution=p.resolution,
                  mapping_layers=p.mapping_layers, channel_base=p.channel_base,
                  channel_max=p.channel_max, conv_clamp=clamp).to(device)
    D = Discriminator(img_resolution=p.resolution, channel_base=p.channel_base,
                      channel_max=p.channel_max, mbstd_group_size=p.mbstd_group,
                      conv_clamp=clamp).to(device)
    return G, D


def d_layers(D: Discriminator) -> list[torch.nn.Module]:
    """D's layers from the input side: per block fromrgb, conv0, conv1, skip; then epilogue.

    This is the order in which FreezeD (`train.freeze_d`) freezes layers, as in the ADA paper's
    transfer-learning experiments.
    """
    layers = []
    for res in D.block_resolutions:
        b = getattr(D, f"b{res}")
        layers += ([b.fromrgb] if hasattr(b, "fromrgb") else []) + [b.conv0, b.conv1, b.skip]
    return layers + [D.b4.conv, D.b4.fc, D.b4.out]


def freeze_d_layers(D: Discriminator, n: int) -> list[torch.nn.Parameter]:
    """Freeze the first `n` layers of D; returns the parameters that stay trainable."""
    layers = d_layers(D)
    if n > len(layers):
        raise ValueError(f"train.freeze_d={n} but D has only {len(layers)} layers")
    frozen = set()
    for layer in layers[:n]:
        for prm in layer.parameters():
            prm.requires_grad_(False)
            frozen.add(id(prm))
    return [prm for prm in D.parameters() if id(prm) not in frozen]


def lazy_adam(params, lr: float, interval: int, active: bool) -> torch.optim.Adam:
    """Adam(0, 0.99); with lazy regularisation every `interval` steps, lr and beta2 are
    rescaled by interval / (interval + 1) (StyleGAN2 appendix B), because the optimiser now
    takes interval + 1 steps where the unregularised schedule took interval."""
    ratio = interval / (interval + 1) if active else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)


@torch.no_grad()
def update_ema(G_ema, G, nimg: int, batch: int, ema_kimg: float, ema_rampup: float) -> None:
    """G_ema <- beta G_ema + (1 - beta) G with half-life ema_kimg (ramped up early on)."""
    beta = ema_beta(nimg, batch, ema_kimg, ema_rampup)
    for pe, pg in zip(G_ema.parameters(), G.parameters()):
        pe.copy_(pg.detach().lerp(pe, beta))
    for be, bg in zip(G_ema.buffers(), G.buffers()):
        be.copy_(bg)


def ema_beta(nimg: int, batch: int, ema_kimg: float, ema_rampup: float) -> float:
    """Per-step decay: half-life ema_kimg, at most ema_rampup * images seen so far (so the
    average does not drag the random init along early on); 0 (copy G) when ema_kimg = 0."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup > 0:
        ema_nimg = min(ema_nimg, nimg * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8)) if ema_kimg > 0 else 0.0
