"""The StyleGAN2 training loop with fixed or adaptive augmentation, checkpoints and resume.

One step = one minibatch of `train.batch` real images shown to D, in four phases (StyleGAN2):
G main loss; G path-length regulariser every `pl_interval` steps; D main loss; D R1 every
`r1_interval` steps. Then the EMA of G and, for ADA, p is adjusted every `ada_interval` steps.

Outputs (`out`, default models/gan/): checkpoint.pt (everything needed to resume, written
atomically every `snap_kimg` and at the end). Logs (`live_dir`, default plots/train/): dvclive
series (losses, r_t, p, seconds per kimg, images per second, SWD) and sample grids of G_ema at
fixed seeds at every snapshot; augment_preview.png (real images as D sees them at several p).

A run whose output folder has a checkpoint resumes from it (kimg, p, optimisers, RNG intact)
when the parameters match (see checkpoint.py); a finished run re-run with a larger
`train.kimg` continues. Nothing in the inner loop reads values back from the device except at
log ticks and snapshots.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from spidergan import atomic
from spidergan.gan import augment as augment_mod
from spidergan.gan import checkpoint as ckpt_mod
from spidergan.gan.dataset import ImageDataset
from spidergan.gan.loss import StyleGAN2Loss
from spidergan.gan.networks import Discriminator, Generator
from spidergan.metrics.swd import sliced_wasserstein
from spidergan.params import TrainParams, to_dict

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
TICKS_PER_SNAPSHOT = 4
PREVIEW_PS = (0.2, 0.5, 0.8)
SWD_DESCRIPTORS = 4096  # per pyramid level and SWD_DIRECTIONS projections: a training monitor
SWD_DIRECTIONS = 128  # costing about a second, not the paper's 2M descriptors x 512


# --------------------------------------------------------------------------- construction
def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def build_networks(p: TrainParams, device: torch.device):
    clamp = p.conv_clamp or None
    G = Generator(z_dim=p.z_dim, w_dim=p.w_dim, img_resolution=p.resolution,
                  mapping_layers=p.mapping_layers, channel_base=p.channel_base,
                  channel_max=p.channel_max, conv_clamp=clamp).to(device)
    D = Discriminator(img_resolution=p.resolution, channel_base=p.channel_base,
                      channel_max=p.channel_max, mbstd_group_size=p.mbstd_group,
                      conv_clamp=clamp).to(device)
    return G, D


def arch_from_params(p: TrainParams) -> dict:
    return {k: getattr(p, k) for k in ckpt_mod.ARCH_KEYS} | {"conv_clamp": p.conv_clamp}


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


# --------------------------------------------------------------------------- images
def to_uint8(images: torch.Tensor) -> np.ndarray:
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: torch.Tensor, cols: int) -> Image.Image:
    a = to_uint8(images)
    n, h, w, c = a.shape
    rows = math.ceil(n / cols)
    grid = np.full((rows * h, cols * w, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = a[i]
    return Image.fromarray(grid)


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


# --------------------------------------------------------------------------- run
def run(p: TrainParams, seed: int, dataset: str | Path = "data/dataset",
        out: str | Path = "models/gan", live_dir: str | Path | None = "plots/train",
        metrics_path: str | Path | None = "metrics/train.json", progress: bool = True) -> dict:
    """Train (or resume) according to `p`; returns the final metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if p.threads:
        torch.set_num_threads(p.threads)
    device = pick_device(p.device)
    ds = ImageDataset(dataset)
    if ds.resolution != p.resolution:
        raise ValueError(f"{dataset} holds {ds.resolution}px images but train.resolution is "
                         f"{p.resolution}: re-run the dataset stage")
    params_rec = to_dict(p)
    data_sha = ds.fingerprint()

    torch.manual_seed(seed)
    G, D = build_networks(p, device)
    G_ema = copy.deepcopy(G).eval()
    for prm in G_ema.parameters():
        prm.requires_grad_(False)
    d_trainable = freeze_d_layers(D, p.freeze_d)
    g_params = list(G.parameters())

    pipe = None
    if p.augment != "none":
        pipe = augment_mod.AugmentPipe(p.augpipe, p=p.aug_prob).to(device)
    ada = (augment_mod.AdaController(target=p.ada_target, ada_kimg=p.ada_kimg,
                                     interval=p.ada_interval) if p.augment == "ada" else None)
    loss = StyleGAN2Loss(G, D, pipe, style_mixing=p.style_mixing, r1_gamma=p.r1_gamma,
                         pl_weight=p.pl_weight, pl_batch_shrink=p.pl_batch_shrink)
    opt_G = lazy_adam(g_params, p.lr_g, p.pl_interval, p.pl_weight > 0)
    opt_D = lazy_adam(d_trainable, p.lr_d, p.r1_interval, p.r1_gamma > 0)

    step, nimg = 0, 0
    history: dict = {}
    ckpt_path = out / CHECKPOINT_NAME
    state = ckpt_mod.load(ckpt_path, map_location=device) if ckpt_path.exists() else None
    if state is not None:
        try:
            ckpt_mod.check_resume(state, params_rec, seed, data_sha, ckpt_path)
        except ckpt_mod.ResumeMismatch as e:
            if p.on_mismatch != "restart":
                raise
            aside = out / "checkpoint-previous.pt"
            os.replace(ckpt_path, aside)
            print(f"train: {e}\ntrain: on_mismatch=restart: moved it to {aside}, starting afresh")
            state = None
    resumed = state is not None
    if resumed:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        loss.pl_mean = state["pl_mean"].to(device)
        if pipe is not None:
            pipe.p.copy_(state["augment_p"])
        if ada is not None:
            ada.load_state_dict(state["ada"])
        step, nimg = int(state["step"]), int(state["nimg"])
        history = dict(state.get("history", {}))
        ckpt_mod.set_rng_state(state["rng"], device)
        print(f"train: resuming {ckpt_path} at kimg {nimg / 1000:.3f} (step {step}), "
              f"p={float(pipe.p) if pipe is not None else 0.0:.3f}")
    elif p.resume_from:
        _transfer(p, G, D, G_ema, device)

    total_nimg = int(round(p.kimg * 1000))
    snap_nimg = max(int(round(p.snap_kimg * 1000)), p.batch)
    tick_nimg = max(snap_nimg // TICKS_PER_SNAPSHOT, p.batch)
    grid_z = seeded_z(range(p.grid * p.grid), p.z_dim)
    swd_reals = ds.sample(min(len(ds), 512), seed)
    live = _open_live(live_dir, resumed)

    def snapshot():
        """Sample grid + SWD of G_ema; checkpoint (except at kimg 0)."""
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            imgs = generate_images(G_ema, grid_z)
            fakes = generate_images(G_ema, seeded_z(range(10_000, 10_000 + len(swd_reals)),
                                                    p.z_dim))
        swd = sliced_wasserstein(swd_reals, fakes, seed=seed, max_descriptors=SWD_DESCRIPTORS,
                                 directions=SWD_DIRECTIONS)
        history.setdefault("swd_start", swd["swd"])
        history["swd_last"] = swd["swd"]
        history.setdefault("swd_series", []).append([nimg / 1000, swd["swd"]])
        grid = image_grid(imgs, p.grid)
        if live is not None:
            live.log_image(f"samples/kimg{nimg / 1000:09.3f}.png", grid)
            live.log_metric("swd", swd["swd"])
        atomic.save_image(out / "samples_latest.png", grid)
        if nimg == 0:
            atomic.save_image(out / "samples_start.png", grid)
        if nimg > 0:
            ckpt_mod.save(ckpt_path, _state(p, params_rec, seed, data_sha, G, D, G_ema, opt_G,
                                            opt_D, loss, pipe, ada, step, nimg, history, device))
        if p.keep_snapshots:  # G_ema alone: what `evaluate.snapshots` scores per kimg
            ckpt_mod.save(out / "snapshots" / f"kimg{nimg / 1000:09.3f}.pt",
                          {"params": params_rec, "seed": seed, "dataset_sha256": data_sha,
                           "arch": arch_from_params(p), "G_ema": G_ema.state_dict(),
                           "nimg": nimg})
        return swd

    if nimg == 0:
        snapshot()
    bar = tqdm(total=p.kimg, initial=nimg / 1000, unit="kimg", desc="train", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} kimg [{elapsed}<{remaining}{postfix}]")
    sums = torch.zeros(4, device=device)  # G loss, D loss, r1 penalty term, pl term
    tick_start_time, tick_start_nimg = time.time(), nimg
    # boundaries are multiples of the intervals, so a resumed run snapshots where the
    # uninterrupted one would have
    next_tick = (nimg // tick_nimg + 1) * tick_nimg
    next_snap = (nimg // snap_nimg + 1) * snap_nimg
    rt = None
    first_tick = True
    B = p.batch
    G.train()
    D.train()
    while nimg < total_nimg:
        real = ds.batch(step, B, seed, p.mirror).to(device)
        z = torch.randn(4, B, p.z_dim, device=device)

        # G main
        D.requires_grad_(False)
        G.requires_grad_(True)
        opt_G.zero_grad(set_to_none=True)
        lg = loss.g_main(z[0])
        lg.backward()
        opt_G.step()
        sums[0] += lg.detach()
        if p.pl_weight > 0 and step % p.pl_interval == 0:
            opt_G.zero_grad(set_to_none=True)
            lpl = loss.g_pl(z[1], gain=p.pl_interval)
            lpl.backward()
            opt_G.step()
            sums[3] += lpl.detach()

        # D main
        G.requires_grad_(False)
        for prm in d_trainable:
            prm.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        ld, real_logits, _ = loss.d_main(z[2], real)
        ld.backward()
        opt_D.step()
        sums[1] += ld.detach()
        if ada is not None:
            ada.accumulate(real_logits)
        if p.r1_gamma > 0 and step % p.r1_interval == 0:
            opt_D.zero_grad(set_to_none=True)
            lr1 = loss.d_r1(real, gain=p.r1_interval)
            lr1.backward()
            opt_D.step()
            sums[2] += lr1.detach()

        update_ema(G_ema, G, nimg, B, p.ema_kimg, p.ema_rampup)
        if ada is not None:
            stats = ada.step(pipe, B, step)
            if stats is not None:
                rt = stats["rt"]
        step += 1
        nimg += B
        bar.update(nimg / 1000 - bar.n)  # exact, no float drift past the total

        is_snap = nimg >= next_snap or nimg >= total_nimg
        if is_snap or nimg >= next_tick:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.time() - tick_start_time
            done = max(nimg - tick_start_nimg, 1)
            n_steps = max(done // B, 1)
            vals = (sums / n_steps).tolist()
            cur_p = float(pipe.p) if pipe is not None else 0.0
            metrics = {"loss_G": vals[0], "loss_D": vals[1], "p": cur_p,
                       "sec_per_kimg": dt / (done / 1000), "img_per_s": done / max(dt, 1e-9)}
            if rt is not None:
                metrics["rt"] = float(rt)
            if live is not None:
                for k, v in metrics.items():
                    live.log_metric(k, v)
            if not first_tick:  # the first tick of a process carries warm-up costs
                history["timed_s"] = history.get("timed_s", 0.0) + dt
                history["timed_nimg"] = history.get("timed_nimg", 0) + done
            first_tick = False
            bar.set_postfix_str(f"p={cur_p:.3f} lossG={vals[0]:.2f} lossD={vals[1]:.2f}")
            sums.zero_()
            next_tick = (nimg // tick_nimg + 1) * tick_nimg
            if is_snap:
                next_snap = (nimg // snap_nimg + 1) * snap_nimg
                snapshot()
            if live is not None:
                live.next_step()
            tick_start_time, tick_start_nimg = time.time(), nimg
    bar.close()

    final_p = float(pipe.p) if pipe is not None else 0.0
    if live_dir is not None:
        _preview(ds, p, final_p, seed, Path(live_dir) / "augment_preview.png")
    if live is not None:
        live.end()
    timed_s, timed_nimg = history.get("timed_s", 0.0), history.get("timed_nimg", 0)
    # mean over the run's log ticks (snapshots and each process's first tick excluded)
    result = {"kimg": nimg / 1000, "steps": step, "p": final_p,
              "swd_start": history.get("swd_start"), "swd_end": history.get("swd_last"),
              "sec_per_kimg": timed_s / (timed_nimg / 1000) if timed_nimg else None,
              "img_per_s": timed_nimg / timed_s if timed_s else None,
              "device": device.type, "images": len(ds)}
    if metrics_path:
        atomic.write_json(metrics_path, result)
    return result


def _state(p, params_rec, seed, data_sha, G, D, G_ema, opt_G, opt_D, loss, pipe, ada, step,
           nimg, history, device) -> dict:
    return {
        "params": params_rec, "seed": seed, "dataset_sha256": data_sha,
        "arch": arch_from_params(p),
        "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
        "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
        "pl_mean": loss.pl_mean.detach().cpu(),
        "augment_p": (pipe.p.detach().cpu() if pipe is not None else torch.zeros([])),
        "ada": ada.state_dict() if ada is not None else {},
        "step": step, "nimg": nimg, "history": history,
        "rng": ckpt_mod.rng_state(device),
    }


def _transfer(p: TrainParams, G, D, G_ema, device) -> None:
    """Start from another run's weights (transfer learning); optimisers, kimg and p start fresh."""
    path = Path(p.resume_from)
    if not path.exists():
        raise FileNotFoundError(f"train.resume_from={p.resume_from!r}: no such checkpoint")
    state = ckpt_mod.load(path, map_location=device)
    diff = ckpt_mod.differing_keys(state.get("arch", {}), arch_from_params(p),
                                   keys=ckpt_mod.ARCH_KEYS)
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} != now {b!r}" for k, (a, b) in diff.items())
        raise ckpt_mod.ResumeMismatch(f"{path} has another architecture ({lines})")
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    G_ema.load_state_dict(state["G_ema"])
    print(f"train: transfer learning from {path} (kimg {state['nimg'] / 1000:.1f} there), "
          f"freeze_d={p.freeze_d}")


def _open_live(live_dir, resumed: bool):
    if live_dir is None:
        return None
    os.environ.setdefault("DVCLIVE_OPEN", "false")
    from dvclive import Live

    return Live(dir=str(live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None,
                report=None)


def _preview(ds: ImageDataset, p: TrainParams, final_p: float, seed: int, path: Path) -> None:
    """The same real images as D sees them at p = 0.2, 0.5, 0.8 and at the final p."""
    reals = ds.sample(min(8, len(ds)), seed)
    with torch.random.fork_rng():
        grid = augment_mod.preview_grid(reals, p.augpipe, list(PREVIEW_PS) + [final_p], seed)
    atomic.save_image(path, grid)
