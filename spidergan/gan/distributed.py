"""Data-parallel training across processes (GPUs, machines) with torch.distributed.

Launch with torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT:

    torchrun --nproc_per_node 4 stages/train.py

Without those variables (`python stages/train.py`, `dvc repro`) training is one process and
nothing here talks to the network. Backend: NCCL on CUDA, gloo on CPU.

Why gradients are averaged with an explicit all_reduce instead of wrapping G and D in
DistributedDataParallel: one StyleGAN2 step runs four different graphs through the same
modules (G main, lazy path length, D main, lazy R1), two of them with
`autograd.grad(create_graph=True)` (double backward, which DDP's reducer does not support),
and toggles `requires_grad` between phases (which breaks DDP's bucket bookkeeping). NVIDIA's
StyleGAN3 trainer does the same for the same reasons: after each phase's backward, the
gradients of the optimised parameters are flattened into one buffer, all_reduced (one
collective per phase, no host sync) and divided by the world size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def from_env() -> World:
    """The process's place from torchrun's variables (a single process when they are absent)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(rank=int(os.environ["RANK"]), size=size,
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init(world: World, device: torch.device) -> None:
    """Join the process group (idempotent); NCCL for CUDA devices, gloo otherwise."""
    if not world.active or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kw = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size, **kw)


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int, step: int) -> int:
    """Seed of rank `rank`'s own random stream (augmentation, synthesis noise) from `step` on.
    Rank 0 keeps the single-process stream (and checkpoints it); the others derive theirs, so a
    checkpoint holds no per-rank state and resumes on any number of ranks."""
    return (seed * 1_000_003 + step * 7919 + rank) % (2**63 - 1)


def average_grads(params: list[torch.nn.Parameter], world: World) -> None:
    """All-reduce (mean) the gradients of `params` in one flat buffer; a missing gradient
    counts as zeros, so every rank takes part with the same layout."""
    if not world.active or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    for p, g in zip(params, flat.split([q.numel() for q in params])):
        p.grad = g.reshape(p.shape).clone() if p.grad is None else p.grad.copy_(g.reshape(p.shape))


def all_reduce_sum_(t: torch.Tensor, world: World) -> torch.Tensor:
    """In place, sum over ranks (no host sync); identity for one process."""
    if world.active:
        dist.all_reduce(t)
    return t


def all_reduce_min_(t: torch.Tensor, world: World) -> torch.Tensor:
    if world.active:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def differentiable_mean(x: torch.Tensor, world: World) -> torch.Tensor:
    """Mean of a scalar over ranks, with gradients flowing back to every rank's input
    (the path-length running mean is a function of the whole global batch)."""
    if not world.active:
        return x
    return _AllReduceSum.apply(x) / world.size


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of the ranks' output gradients.
    (torch.distributed.nn.functional.all_reduce does the same but is deprecated.)"""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        g = grad.clone()
        dist.all_reduce(g)
        return g


def broadcast_module_(module: torch.nn.Module, world: World) -> None:
    """Rank 0's parameters and buffers to every rank (same start whatever each rank built)."""
    if not world.active:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)
