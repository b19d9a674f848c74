"""The StyleGAN2 training loop with fixed or adaptive augmentation, checkpoints and resume.

One step (`step`) = one minibatch of `train.batch` reals shown to D, in four phases: G main
loss; G path length every `pl_interval` steps; D main loss; D R1 every `r1_interval` steps;
then the EMA of G and, for ADA, p every `ada_interval` steps. `tick` (every snap_kimg / 4) is
the only place that reads values back from the device; `snapshot` (every `snap_kimg` and at the
end) writes sample grids of G_ema at fixed seeds, the SWD and checkpoint.pt in `out`
(atomically); dvclive series and augment_preview.png go to `live_dir`. The state between steps
is one `Run`.

A run whose output folder has a checkpoint resumes from it (kimg, p, optimisers, RNG intact)
when the parameters match (checkpoint.py); a finished run re-run with a larger `train.kimg`
continues.

Several processes (torchrun; distributed.py, docs/gpu.md): the global batch is split across
the ranks, gradients and the ADA statistic are averaged, only rank 0 writes. Latents (and the
path-length directions) are drawn for the whole global batch from a stream seeded by (seed,
step) and each rank takes its share, so one process and N see the same latents; augmentation
and synthesis noise are per rank.

Non-finite losses: every step folds "all losses finite" into a device flag, read at each tick
and always before a checkpoint is written, so a NaN stops the run within one tick, naming the
step, and never reaches a checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from spidergan import atomic
from spidergan.gan import augment as augment_mod
from spidergan.gan import checkpoint as ckpt_mod
from spidergan.gan import distributed as dist_mod
from spidergan.gan import build
from spidergan.gan.build import (  # noqa: F401  (re-exported: tests and tools patch them here)
    build_networks, configure_backends, d_layers, ema_beta, fast_modules, freeze_d_layers,
    lazy_adam, update_ema, use_bf16,
)
from spidergan.gan.checkpoint import CHECKPOINT_NAME
from spidergan.gan.dataset import ImageDataset
from spidergan.device import pick as pick_device
from spidergan.gan.generate import generate_images, image_grid, seeded_z
from spidergan.gan.loss import StyleGAN2Loss
from spidergan.metrics.swd import sliced_wasserstein
from spidergan.params import TrainParams, to_dict

TICKS_PER_SNAPSHOT = 4
PREVIEW_PS = (0.2, 0.5, 0.8)
SWD_DESCRIPTORS = 4096  # per pyramid level and SWD_DIRECTIONS projections: a training monitor
SWD_DIRECTIONS = 128  # costing about a second, not the paper's 2M descriptors x 512
NOT_SEEN = 2**62  # "no non-finite loss yet" in the device-side flag


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or Inf; the message names the step and the last good checkpoint."""


@dataclasses.dataclass
class Run:
    """A training run between steps: its networks, optimisers, augmentation, counters and the
    per-tick accumulators. Built by `start`, advanced by `step`, logged by `tick`, saved by
    `snapshot`."""

    p: TrainParams
    seed: int
    world: dist_mod.World
    device: torch.device
    out: Path
    ds: ImageDataset
    params_rec: dict
    data_sha: str
    G: Any
    D: Any
    G_ema: Any
    g_params: list
    d_trainable: list
    pipe: augment_mod.AugmentPipe | None
    ada: augment_mod.AdaController | None
    loss: StyleGAN2Loss  # eager modules: the regularisers' double backward
    main_loss: StyleGAN2Loss  # possibly compiled modules: the main losses
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    amp: Callable
    bf16: bool
    r1_gamma: float  # train.r1_gamma resolved (auto)
    ema_rampup: float  # 0 when transfer learning
    step: int = 0
    nimg: int = 0
    history: dict = dataclasses.field(default_factory=dict)
    resumed: bool = False
    last_ckpt: str | None = None  # "path (kimg, step)" of the last checkpoint written or read
    live: Any = None
    grid_z: torch.Tensor | None = None
    swd_reals: torch.Tensor | None = None
    # per-tick state
    sums: torch.Tensor | None = None  # G loss, D loss, R1 term, path-length term
    first_bad: torch.Tensor | None = None  # step of the first non-finite loss, on the device
    rt: float | None = None
    first_tick: bool = True
    tick_start_time: float = 0.0
    tick_start_nimg: int = 0
    next_tick: int = 0
    next_snap: int = 0
    step_gen: torch.Generator | None = None

    @property
    def ckpt_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    @property
    def total_nimg(self) -> int:
        return int(round(self.p.kimg * 1000))

    @property
    def snap_nimg(self) -> int:
        return max(int(round(self.p.snap_kimg * 1000)), self.p.batch)

    @property
    def tick_nimg(self) -> int:
        return max(self.snap_nimg // TICKS_PER_SNAPSHOT, self.p.batch)

    @property
    def p_now(self) -> float:
        return float(self.pipe.p) if self.pipe is not None else 0.0


# --------------------------------------------------------------------------- run
def run(p: TrainParams, seed: int, *, dataset: str | Path, out: str | Path,
        live_dir: str | Path | None = None, metrics_path: str | Path | None = None,
        progress: bool = True) -> dict:
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
        r = start(p, seed, world, device, dataset, out, live_dir if world.is_main else None)
        bar = tqdm(total=p.kimg, initial=r.nimg / 1000, unit="kimg", desc="train",
                   disable=not (progress and world.is_main),
                   bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} kimg "
                              "[{elapsed}<{remaining}{postfix}]")
        while r.nimg < r.total_nimg:
            step(r)
            bar.update(r.nimg / 1000 - bar.n)  # exact, no float drift past the total
            is_snap = r.nimg >= r.next_snap or r.nimg >= r.total_nimg
            if is_snap or r.nimg >= r.next_tick:
                tick(r, bar, is_snap)
        bar.close()
        return finish(r, live_dir if world.is_main else None,
                      metrics_path if world.is_main else None)
    finally:
        dist_mod.shutdown(world)


def start(p: TrainParams, seed: int, world: dist_mod.World, device: torch.device, dataset,
          out, live_dir) -> Run:
    """Build the run, resume it from `out`'s checkpoint (or transfer from `resume_from`), and
    take the kimg-0 snapshot of a fresh run."""
    out = Path(out)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    configure_backends(p, device)
    bf16 = use_bf16(p, device)
    ds = ImageDataset(dataset)
    if ds.resolution != p.resolution:
        raise ValueError(f"{dataset} holds {ds.resolution}px images but train.resolution is "
                         f"{p.resolution}: re-run the dataset stage")

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
        pipe = augment_mod.AugmentPipe(p.augpipe, p=p.aug_prob,
                                       filter=build.augment_filter(p, device)).to(device)
    ada = (augment_mod.AdaController(target=p.ada_target, ada_kimg=build.ada_kimg(p),
                                     interval=p.ada_interval) if p.augment == "ada" else None)
    gamma = build.r1_gamma(p)
    loss_kw = dict(style_mixing=p.style_mixing, r1_gamma=gamma, pl_weight=p.pl_weight,
                   pl_batch_shrink=p.pl_batch_shrink)
    loss = StyleGAN2Loss(G, D, pipe, **loss_kw)
    opt_G = lazy_adam(g_params, p.lr_g, p.pl_interval, p.pl_weight > 0)
    opt_D = lazy_adam(d_trainable, p.lr_d, p.r1_interval, gamma > 0)
    if world.active:
        loss.batch_mean = lambda x: dist_mod.differentiable_mean(x, world)
    fG, fD = fast_modules(G, D, p.compile)
    main_loss = loss if (fG is G and fD is D) else StyleGAN2Loss(fG, fD, pipe, **loss_kw)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else \
        contextlib.nullcontext
    r = Run(p=p, seed=seed, world=world, device=device, out=out, ds=ds,
            params_rec=to_dict(p), data_sha=ds.fingerprint(), G=G, D=D, G_ema=G_ema,
            g_params=g_params, d_trainable=d_trainable, pipe=pipe, ada=ada, loss=loss,
            main_loss=main_loss, opt_G=opt_G, opt_D=opt_D, amp=amp, bf16=bf16,
            r1_gamma=gamma, ema_rampup=build.ema_rampup(p))

    state = _checkpoint_to_resume(r)
    if state is not None:
        _restore(r, state)
    else:
        if p.resume_from:
            ckpt_mod.load_transfer(p, G, D, G_ema, device)
            print(f"train: transfer learning from {p.resume_from}, freeze_d={p.freeze_d}, "
                  f"ada_kimg {build.ada_kimg(p):g}, EMA without ramp-up")
        if not world.is_main:
            torch.manual_seed(dist_mod.rank_seed(seed, world.rank, 0))
    where = ds.to_device(device, p.gpu_data_mib)
    if world.is_main:
        print(f"train: {world.size} process(es), {device}, "
              f"{'bf16' if bf16 else 'fp32'}{', compiled' if p.compile else ''}, "
              f"r1_gamma {gamma:.4g}, augment filter {pipe.filter if pipe else '-'}, "
              f"batch {p.batch} ({p.batch // world.size} per process), dataset in {where}")

    r.grid_z = seeded_z(range(p.grid * p.grid), p.z_dim)
    r.swd_reals = ds.sample(min(len(ds), 512), seed)
    r.live = _open_live(live_dir, r.resumed)
    if r.nimg == 0:
        snapshot(r)
    r.sums = torch.zeros(4, device=device)
    r.tick_start_time, r.tick_start_nimg = time.time(), r.nimg
    # boundaries are multiples of the intervals, so a resumed run snapshots where the
    # uninterrupted one would have
    r.next_tick = (r.nimg // r.tick_nimg + 1) * r.tick_nimg
    r.next_snap = (r.nimg // r.snap_nimg + 1) * r.snap_nimg
    r.first_bad = torch.full([], NOT_SEEN, dtype=torch.int64, device=device)
    r.step_gen = torch.Generator(device=device)
    G.train()
    D.train()
    return r


def _checkpoint_to_resume(r: Run) -> dict | None:
    """The output folder's checkpoint when its parameters match; None to start afresh."""
    if not r.ckpt_path.exists():
        return None
    state = ckpt_mod.load(r.ckpt_path, map_location=r.device)
    try:
        ckpt_mod.check_resume(state, r.params_rec, r.seed, r.data_sha, r.ckpt_path)
    except ckpt_mod.ResumeMismatch as e:
        if r.p.on_mismatch != "restart":
            raise
        aside = r.out / "checkpoint-previous.pt"
        if r.world.active:
            torch.distributed.barrier()  # every rank has read it before it moves
        if r.world.is_main:
            os.replace(r.ckpt_path, aside)
            print(f"train: {e}\ntrain: on_mismatch=restart: moved it to {aside}, "
                  f"starting afresh")
        return None
    return state


def _restore(r: Run, state: dict) -> None:
    r.G.load_state_dict(state["G"])
    r.D.load_state_dict(state["D"])
    r.G_ema.load_state_dict(state["G_ema"])
    r.opt_G.load_state_dict(state["opt_G"])
    r.opt_D.load_state_dict(state["opt_D"])
    r.loss.pl_mean = state["pl_mean"].to(r.device)
    if r.pipe is not None:
        r.pipe.p.copy_(state["augment_p"])
    if r.ada is not None:
        r.ada.load_state_dict(state["ada"])
        if not r.world.is_main:  # the saved partial statistic is rank 0's; counted once
            r.ada.stats_tensor().zero_()
    r.step, r.nimg = int(state["step"]), int(state["nimg"])
    r.history = dict(state.get("history", {}))
    ckpt_mod.set_rng_state(state["rng"], r.device)
    if not r.world.is_main:
        torch.manual_seed(dist_mod.rank_seed(r.seed, r.world.rank, r.step))
    r.resumed = True
    r.last_ckpt = f"{r.ckpt_path} (kimg {r.nimg / 1000:.3f}, step {r.step})"
    print(f"train: resuming {r.ckpt_path} at kimg {r.nimg / 1000:.3f} (step {r.step}), "
          f"p={r.p_now:.3f}")


# --------------------------------------------------------------------------- one step
def step(r: Run) -> None:
    """One minibatch: G main, G path length (lazy), D main, D R1 (lazy); EMA; ADA's p.

    Nothing here reads a value back from the device."""
    p, world, device, B = r.p, r.world, r.device, r.p.batch
    rank, W = world.rank, world.size
    real = r.ds.batch(r.step, B, r.seed, p.mirror, rank=rank, world=W, device=device)
    if p.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    r.step_gen.manual_seed(dist_mod.rank_seed(r.seed, 0, r.step) + 1)
    # latents for the whole global batch from one stream; each rank takes its share
    z = torch.randn(4, B, p.z_dim, device=device, generator=r.step_gen)[:, rank::W]
    losses = []

    # G main
    r.D.requires_grad_(False)
    r.G.requires_grad_(True)
    r.opt_G.zero_grad(set_to_none=True)
    with r.amp():
        lg = r.main_loss.g_main(z[0])
    lg.backward()
    dist_mod.average_grads(r.g_params, world)
    r.opt_G.step()
    losses.append(lg.detach())
    if p.pl_weight > 0 and r.step % p.pl_interval == 0:
        r.opt_G.zero_grad(set_to_none=True)
        pl_noise = None
        # the batch-wide path-length directions split evenly only when the shrink divides
        # the per-rank batch; otherwise each rank draws its own
        if (B // W) % p.pl_batch_shrink == 0:
            pl_n = max(B // p.pl_batch_shrink, 1)
            pl_noise = torch.randn(pl_n, r.G.img_channels, p.resolution, p.resolution,
                                   device=device, generator=r.step_gen)[rank::W]
        lpl = r.loss.g_pl(z[1], gain=p.pl_interval, noise=pl_noise)  # fp32: double backward
        lpl.backward()
        dist_mod.average_grads(r.g_params, world)
        r.opt_G.step()
        losses.append(lpl.detach())
        r.sums[3] += lpl.detach()

    # D main
    r.G.requires_grad_(False)
    for prm in r.d_trainable:
        prm.requires_grad_(True)
    r.opt_D.zero_grad(set_to_none=True)
    with r.amp():
        ld, real_logits, _ = r.main_loss.d_main(z[2], real)
    ld.backward()
    dist_mod.average_grads(r.d_trainable, world)
    r.opt_D.step()
    losses.append(ld.detach())
    if r.ada is not None:
        r.ada.accumulate(real_logits)
    if r.r1_gamma > 0 and r.step % p.r1_interval == 0:
        r.opt_D.zero_grad(set_to_none=True)
        lr1 = r.loss.d_r1(real, gain=p.r1_interval)  # fp32: R1 is a gradient penalty
        lr1.backward()
        dist_mod.average_grads(r.d_trainable, world)
        r.opt_D.step()
        losses.append(lr1.detach())
        r.sums[2] += lr1.detach()
    r.sums[0] += lg.detach()
    r.sums[1] += ld.detach()
    finite = torch.isfinite(torch.stack(losses).float()).all()
    r.first_bad = torch.where(finite, r.first_bad, r.first_bad.clamp(max=r.step))

    if world.is_main:  # only rank 0 samples and saves G_ema
        update_ema(r.G_ema, r.G, r.nimg, B, p.ema_kimg, r.ema_rampup)
    if r.ada is not None:
        if world.active and (r.step + 1) % r.ada.interval == 0:
            dist_mod.all_reduce_sum_(r.ada.stats_tensor(), world)
        stats = r.ada.step(r.pipe, B, r.step)
        if stats is not None:
            r.rt = stats["rt"]
    r.step += 1
    r.nimg += B


# --------------------------------------------------------------------------- ticks, snapshots
def tick(r: Run, bar, is_snap: bool) -> None:
    """Log tick: the one host sync; stop on a non-finite loss; log; snapshot when due."""
    if r.device.type == "cuda":
        torch.cuda.synchronize(r.device)
    B, W = r.p.batch, r.world.size
    dt = time.time() - r.tick_start_time
    done = max(r.nimg - r.tick_start_nimg, 1)
    n_steps = max(done // B, 1)
    dist_mod.all_reduce_sum_(r.sums, r.world)
    dist_mod.all_reduce_min_(r.first_bad, r.world)
    vals = (r.sums / (n_steps * W)).tolist()
    bad = int(r.first_bad)
    if bad == NOT_SEEN and is_snap and not all_finite(r.G, r.D):
        bad = r.step - 1
    if bad != NOT_SEEN:
        names = [n for n, v in zip(("G", "D", "R1", "path length"), vals) if not math.isfinite(v)]
        what = f"loss ({', '.join(names)})" if names else "weights"
        raise NonFiniteLoss(
            f"train: non-finite {what} at step {bad} "
            f"(kimg {bad * B / 1000:.3f}); stopped instead of training on. Last good "
            f"checkpoint: {r.last_ckpt or 'none written yet'}. Lower the learning rates, "
            f"set train.conv_clamp, or use train.precision: fp32.")
    cur_p = r.p_now
    metrics = {"loss_G": vals[0], "loss_D": vals[1], "p": cur_p,
               "sec_per_kimg": dt / (done / 1000), "img_per_s": done / max(dt, 1e-9)}
    if r.rt is not None:
        metrics["rt"] = float(r.rt)
        r.history["ada_rt"] = float(r.rt)
    if r.live is not None:
        for k, v in metrics.items():
            r.live.log_metric(k, v)
    if not r.first_tick:  # the first tick of a process carries warm-up costs
        r.history["timed_s"] = r.history.get("timed_s", 0.0) + dt
        r.history["timed_nimg"] = r.history.get("timed_nimg", 0) + done
    r.first_tick = False
    bar.set_postfix_str(f"p={cur_p:.3f} lossG={vals[0]:.2f} lossD={vals[1]:.2f}")
    r.sums.zero_()
    r.next_tick = (r.nimg // r.tick_nimg + 1) * r.tick_nimg
    if is_snap:
        r.next_snap = (r.nimg // r.snap_nimg + 1) * r.snap_nimg
        snapshot(r)
    if r.live is not None:
        r.live.next_step()
    r.tick_start_time, r.tick_start_nimg = time.time(), r.nimg


def snapshot(r: Run) -> dict | None:
    """Sample grid + SWD of G_ema; checkpoint (except at kimg 0). Rank 0 only."""
    if not r.world.is_main:
        return None
    p, out, nimg = r.p, r.out, r.nimg
    with torch.random.fork_rng(devices=[r.device] if r.device.type == "cuda" else []):
        imgs = generate_images(r.G_ema, r.grid_z)
        fakes = generate_images(r.G_ema, seeded_z(range(10_000, 10_000 + len(r.swd_reals)),
                                                  p.z_dim))
    swd = sliced_wasserstein(r.swd_reals, fakes, seed=r.seed, max_descriptors=SWD_DESCRIPTORS,
                             directions=SWD_DIRECTIONS)
    r.history.setdefault("swd_start", swd["swd"])
    r.history["swd_last"] = swd["swd"]
    r.history.setdefault("swd_series", []).append([nimg / 1000, swd["swd"]])
    grid = image_grid(imgs, p.grid)
    if r.live is not None:
        r.live.log_image(f"samples/kimg{nimg / 1000:09.3f}.png", grid)
        r.live.log_metric("monitor_swd", swd["swd"])
    atomic.save_image(out / "samples_latest.png", grid)
    if nimg == 0:
        atomic.save_image(out / "samples_start.png", grid)
    if nimg > 0:
        ckpt_mod.save(r.ckpt_path, _state(r))
        r.last_ckpt = f"{r.ckpt_path} (kimg {nimg / 1000:.3f}, step {r.step})"
    if p.keep_snapshots:  # G_ema alone: what `evaluate.snapshots` scores per kimg
        ckpt_mod.save(out / "snapshots" / f"kimg{nimg / 1000:09.3f}.pt",
                      {"params": r.params_rec, "seed": r.seed, "dataset_sha256": r.data_sha,
                       "arch": ckpt_mod.arch_from_params(p), "G_ema": r.G_ema.state_dict(),
                       "nimg": nimg})
    return swd


def finish(r: Run, live_dir, metrics_path) -> dict:
    """Augmentation preview, close the logs, the run's metrics (written by rank 0)."""
    final_p = r.p_now
    if live_dir is not None:
        filt = r.pipe.filter if r.pipe is not None else "bilinear"
        _preview(r.ds, r.p, final_p, r.seed, filt, Path(live_dir) / "augment_preview.png")
    if r.live is not None:
        r.live.end()
    timed_s, timed_nimg = r.history.get("timed_s", 0.0), r.history.get("timed_nimg", 0)
    # mean over the run's log ticks (snapshots and each process's first tick excluded)
    result = {"kimg": r.nimg / 1000, "steps": r.step, "p": final_p,
              # "monitor_": not evaluate's swd (fewer fakes, capped descriptors; README)
              "monitor_swd_start": r.history.get("swd_start"),
              "monitor_swd_end": r.history.get("swd_last"),
              "sec_per_kimg": timed_s / (timed_nimg / 1000) if timed_nimg else None,
              "img_per_s": timed_nimg / timed_s if timed_s else None,
              "device": r.device.type, "images": len(r.ds)}
    if metrics_path:
        atomic.write_metrics(metrics_path, result)
    return result


def all_finite(*modules) -> bool:
    """Every parameter finite (one host sync; called only before a checkpoint is written)."""
    flags = [torch.isfinite(prm).all() for m in modules for prm in m.parameters()]
    return bool(torch.stack(flags).all())


def _state(r: Run) -> dict:
    return {
        "params": r.params_rec, "seed": r.seed, "dataset_sha256": r.data_sha,
        "arch": ckpt_mod.arch_from_params(r.p),
        "G": r.G.state_dict(), "D": r.D.state_dict(), "G_ema": r.G_ema.state_dict(),
        "opt_G": r.opt_G.state_dict(), "opt_D": r.opt_D.state_dict(),
        "pl_mean": r.loss.pl_mean.detach().cpu(),
        "augment_p": (r.pipe.p.detach().cpu() if r.pipe is not None else torch.zeros([])),
        "ada": r.ada.state_dict() if r.ada is not None else {},
        "step": r.step, "nimg": r.nimg, "history": r.history,
        "rng": ckpt_mod.rng_state(r.device),
    }


def _open_live(live_dir, resumed: bool):
    if live_dir is None:
        return None
    os.environ.setdefault("DVCLIVE_OPEN", "false")
    from dvclive import Live

    return Live(dir=str(live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None,
                report=None)


def _preview(ds: ImageDataset, p: TrainParams, final_p: float, seed: int, filt: str,
             path: Path) -> None:
    """The same real images as D sees them at p = 0.2, 0.5, 0.8 and at the final p."""
    reals = ds.sample(min(8, len(ds)), seed)
    with torch.random.fork_rng():
        grid = augment_mod.preview_grid(reals, p.augpipe, list(PREVIEW_PS) + [final_p], seed,
                                        filter=filt)
    atomic.save_image(path, grid)
