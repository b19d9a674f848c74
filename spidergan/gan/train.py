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

Several processes (GPUs, machines): launch with torchrun (see distributed.py, docs/gpu.md).
The global batch `train.batch` is split across the ranks, gradients and the ADA statistic are
averaged across them, and only rank 0 writes checkpoints, grids, logs and metrics. Random
latents (and the path-length directions) are drawn for the whole global batch from a stream
seeded by (seed, step) and each rank takes its share, so one process and N processes see the
same latents; each rank's other randomness (augmentation, synthesis noise) is its own.

Non-finite losses: every step folds "were all losses finite" into a device flag (no host
sync); the flag is read at each log tick, and always before a checkpoint is written, so a
NaN stops the run within one tick, naming the step, and never reaches a checkpoint.
"""

from __future__ import annotations

import contextlib
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
from spidergan.gan import distributed as dist_mod
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
class NonFiniteLoss(RuntimeError):
    """A loss became NaN or Inf; the message names the step and the last good checkpoint."""


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def use_bf16(p: TrainParams, device: torch.device) -> bool:
    if p.precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return p.precision == "bf16"


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
    """Train (or resume) according to `p`; returns the final metrics (on every rank)."""
    world = dist_mod.from_env()
    if p.batch % world.size:
        raise ValueError(f"train.batch={p.batch} cannot be split over {world.size} processes: "
                         f"use a multiple of the number of processes")
    if p.threads:
        torch.set_num_threads(p.threads)
    device = pick_device(p.device, world.local_rank)
    dist_mod.init(world, device)
    try:
        return _run(p, seed, world, device, dataset, out,
                    live_dir if world.is_main else None,
                    metrics_path if world.is_main else None, progress and world.is_main)
    finally:
        dist_mod.shutdown(world)


def _run(p: TrainParams, seed: int, world: dist_mod.World, device: torch.device, dataset, out,
         live_dir, metrics_path, progress: bool) -> dict:
    out = Path(out)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    configure_backends(p, device)
    bf16 = use_bf16(p, device)
    ds = ImageDataset(dataset)
    if ds.resolution != p.resolution:
        raise ValueError(f"{dataset} holds {ds.resolution}px images but train.resolution is "
                         f"{p.resolution}: re-run the dataset stage")
    params_rec = to_dict(p)
    data_sha = ds.fingerprint()

    torch.manual_seed(seed)
    G, D = build_networks(p, device)
    dist_mod.broadcast_module_(G, world)
    dist_mod.broadcast_module_(D, world)
    if p.channels_last:
        D = D.to(memory_format=torch.channels_last)
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
    if world.active:
        loss.batch_mean = lambda x: dist_mod.differentiable_mean(x, world)
    fG, fD = fast_modules(G, D, p.compile)
    main_loss = loss if (fG is G and fD is D) else StyleGAN2Loss(
        fG, fD, pipe, style_mixing=p.style_mixing, r1_gamma=p.r1_gamma,
        pl_weight=p.pl_weight, pl_batch_shrink=p.pl_batch_shrink)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else \
        contextlib.nullcontext

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
            if world.active:
                torch.distributed.barrier()  # every rank has read it before it moves
            if world.is_main:
                os.replace(ckpt_path, aside)
                print(f"train: {e}\ntrain: on_mismatch=restart: moved it to {aside}, "
                      f"starting afresh")
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
            if not world.is_main:  # the saved partial statistic is rank 0's; counted once
                ada.stats_tensor().zero_()
        step, nimg = int(state["step"]), int(state["nimg"])
        history = dict(state.get("history", {}))
        ckpt_mod.set_rng_state(state["rng"], device)
        if not world.is_main:
            torch.manual_seed(dist_mod.rank_seed(seed, world.rank, step))
        print(f"train: resuming {ckpt_path} at kimg {nimg / 1000:.3f} (step {step}), "
              f"p={float(pipe.p) if pipe is not None else 0.0:.3f}")
    else:
        if p.resume_from:
            _transfer(p, G, D, G_ema, device)
        if not world.is_main:
            torch.manual_seed(dist_mod.rank_seed(seed, world.rank, 0))
    last_ckpt = f"{ckpt_path} (kimg {nimg / 1000:.3f}, step {step})" if resumed else None
    where = ds.to_device(device, p.gpu_data_mib)
    if world.is_main:
        print(f"train: {world.size} process(es), {device}, "
              f"{'bf16' if bf16 else 'fp32'}{', compiled' if p.compile else ''}, "
              f"batch {p.batch} ({p.batch // world.size} per process), dataset in {where}")

    total_nimg = int(round(p.kimg * 1000))
    snap_nimg = max(int(round(p.snap_kimg * 1000)), p.batch)
    tick_nimg = max(snap_nimg // TICKS_PER_SNAPSHOT, p.batch)
    grid_z = seeded_z(range(p.grid * p.grid), p.z_dim)
    swd_reals = ds.sample(min(len(ds), 512), seed)
    live = _open_live(live_dir, resumed)

    def snapshot():
        """Sample grid + SWD of G_ema; checkpoint (except at kimg 0). Rank 0 only."""
        nonlocal last_ckpt
        if not world.is_main:
            return None
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
            last_ckpt = f"{ckpt_path} (kimg {nimg / 1000:.3f}, step {step})"
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
    # step of the first non-finite loss (NOT_SEEN: none), kept on the device
    NOT_SEEN = 2**62
    first_bad = torch.full([], NOT_SEEN, dtype=torch.int64, device=device)
    step_gen = torch.Generator(device=device)
    rank, W = world.rank, world.size
    pl_n = max(p.batch // p.pl_batch_shrink, 1)
    # the batch-wide path-length directions split evenly only when the shrink divides the
    # per-rank batch; otherwise each rank draws its own
    pl_shared = (p.batch // W) % p.pl_batch_shrink == 0
    rt = None
    first_tick = True
    B = p.batch
    G.train()
    D.train()
    while nimg < total_nimg:
        real = ds.batch(step, B, seed, p.mirror, rank=rank, world=W, device=device)
        if p.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        step_gen.manual_seed(dist_mod.rank_seed(seed, 0, step) + 1)
        z = torch.randn(4, B, p.z_dim, device=device, generator=step_gen)[:, rank::W]
        step_losses = []

        # G main
        D.requires_grad_(False)
        G.requires_grad_(True)
        opt_G.zero_grad(set_to_none=True)
        with amp():
            lg = main_loss.g_main(z[0])
        lg.backward()
        dist_mod.average_grads(g_params, world)
        opt_G.step()
        step_losses.append(lg.detach())
        if p.pl_weight > 0 and step % p.pl_interval == 0:
            opt_G.zero_grad(set_to_none=True)
            pl_noise = None
            if pl_shared:
                pl_noise = torch.randn(pl_n, G.img_channels, p.resolution, p.resolution,
                                       device=device, generator=step_gen)[rank::W]
            lpl = loss.g_pl(z[1], gain=p.pl_interval, noise=pl_noise)  # fp32: double backward
            lpl.backward()
            dist_mod.average_grads(g_params, world)
            opt_G.step()
            step_losses.append(lpl.detach())
            sums[3] += lpl.detach()

        # D main
        G.requires_grad_(False)
        for prm in d_trainable:
            prm.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        with amp():
            ld, real_logits, _ = main_loss.d_main(z[2], real)
        ld.backward()
        dist_mod.average_grads(d_trainable, world)
        opt_D.step()
        step_losses.append(ld.detach())
        if ada is not None:
            ada.accumulate(real_logits)
        if p.r1_gamma > 0 and step % p.r1_interval == 0:
            opt_D.zero_grad(set_to_none=True)
            lr1 = loss.d_r1(real, gain=p.r1_interval)  # fp32: R1 is a gradient penalty
            lr1.backward()
            dist_mod.average_grads(d_trainable, world)
            opt_D.step()
            step_losses.append(lr1.detach())
            sums[2] += lr1.detach()
        sums[0] += lg.detach()
        sums[1] += ld.detach()
        finite = torch.isfinite(torch.stack(step_losses).float()).all()
        first_bad = torch.where(finite, first_bad, first_bad.clamp(max=step))

        if world.is_main:  # only rank 0 samples and saves G_ema
            update_ema(G_ema, G, nimg, B, p.ema_kimg, p.ema_rampup)
        if ada is not None:
            if world.active and (step + 1) % ada.interval == 0:
                dist_mod.all_reduce_sum_(ada.stats_tensor(), world)
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
            dist_mod.all_reduce_sum_(sums, world)
            dist_mod.all_reduce_min_(first_bad, world)
            vals = (sums / (n_steps * W)).tolist()
            bad = int(first_bad)
            if bad == NOT_SEEN and is_snap and not all_finite(G, D):
                bad = step - 1
            if bad != NOT_SEEN:
                names = [n for n, v in zip(("G", "D", "R1", "path length"), vals)
                         if not math.isfinite(v)]
                what = f"loss ({', '.join(names)})" if names else "weights"
                raise NonFiniteLoss(
                    f"train: non-finite {what} at step {bad} "
                    f"(kimg {bad * B / 1000:.3f}); stopped instead of training on. Last good "
                    f"checkpoint: {last_ckpt or 'none written yet'}. Lower the learning rates, "
                    f"set train.conv_clamp, or use train.precision: fp32.")
            cur_p = float(pipe.p) if pipe is not None else 0.0
            metrics = {"loss_G": vals[0], "loss_D": vals[1], "p": cur_p,
                       "sec_per_kimg": dt / (done / 1000), "img_per_s": done / max(dt, 1e-9)}
            if rt is not None:
                metrics["rt"] = float(rt)
                history["ada_rt"] = float(rt)
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


def all_finite(*modules) -> bool:
    """Every parameter finite (one host sync; called only before a checkpoint is written)."""
    flags = [torch.isfinite(prm).all() for m in modules for prm in m.parameters()]
    return bool(torch.stack(flags).all())


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
