"""Training checkpoints: written atomically, loaded with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors and plain values only (no pickled classes), so loading one
cannot run code: network and optimiser state dicts, the augmentation probability p and the ADA
controller's state, the path-length running mean, images seen, step, RNG states (as uint8
tensors) and the parameters it was trained with.

Resume rule: a run continues from its checkpoint only when the parameters that define the model,
the data and the training trajectory are the same (`MATCH_KEYS` + seed + the dataset's sha256).
Every TrainParams field is in exactly one of `MATCH_KEYS` ("checked on resume") and
`FREE_KEYS` ("free to change": `train.kimg` may grow to continue a finished run; logging and
hardware settings), which a test enforces, so a new field must be classified. Anything in
MATCH_KEYS that differs raises `ResumeMismatch` naming the keys, because continuing would
silently train a different experiment (with `train.on_mismatch: restart` the old checkpoint is
set aside instead). Numerics settings (precision, compile, tf32, channels_last,
augment_filter) are checked: they change the trajectory, not just its speed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from spidergan import atomic

FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"  # in a training run's output folder

# Parameters whose change makes a checkpoint a different experiment (architecture, data,
# schedule, regularisation, augmentation, numerics): checked on resume.
MATCH_KEYS = (
    "resolution", "batch", "channel_base", "channel_max", "mapping_layers", "z_dim", "w_dim",
    "mbstd_group", "conv_clamp", "lr_g", "lr_d", "r1_gamma", "r1_interval", "pl_weight",
    "pl_interval", "pl_batch_shrink", "style_mixing", "ema_kimg", "ema_rampup", "mirror",
    "augment", "aug_prob", "ada_target", "ada_kimg", "ada_interval", "augpipe",
    "augment_filter", "resume_from", "freeze_d", "precision", "compile", "tf32",
    "channels_last",
)
# Free to change on resume: length, logging, and where/how fast it runs (`device` changes the
# random streams too, but moving a run between machines is its purpose).
# `seed` (train.seed, null = the top-level seed) is checked as the seed it resolves to, beside
# MATCH_KEYS in check_resume: null and the same number are one run.
FREE_KEYS = ("kimg", "snap_kimg", "grid", "keep_snapshots", "on_mismatch", "device", "threads",
             "gpu_data_mib", "seed")
# Architecture keys that must match for transfer learning (`train.resume_from`).
ARCH_KEYS = ("resolution", "channel_base", "channel_max", "mapping_layers", "z_dim", "w_dim",
             "mbstd_group")


def arch_from_params(p) -> dict:
    """The architecture a checkpoint records (train params -> {key: value})."""
    return {k: getattr(p, k) for k in ARCH_KEYS} | {"conv_clamp": p.conv_clamp}


class ResumeMismatch(RuntimeError):
    """The checkpoint was made with different parameters; the message names them."""


def save(path: str | Path, state: dict) -> None:
    state = {"format": FORMAT, **state}
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a SpiderGAN checkpoint (format {FORMAT})")
    return state


def differing_keys(recorded: dict, current: dict, keys=MATCH_KEYS) -> dict:
    """{key: (recorded, current)} for the keys whose values differ."""
    out = {}
    for k in keys:
        a, b = recorded.get(k, "<missing>"), current.get(k, "<missing>")
        if a != b:
            out[k] = (a, b)
    return out


def check_resume(state: dict, train_params: dict, seed: int, dataset_sha256: str,
                 path: str | Path = "checkpoint") -> None:
    diff = differing_keys(state["params"], train_params)
    if state.get("seed") != seed:
        diff["seed"] = (state.get("seed"), seed)
    if state.get("dataset_sha256") != dataset_sha256:
        diff["dataset (sha256 of train.npy)"] = (state.get("dataset_sha256"), dataset_sha256)
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} != now {b!r}" for k, (a, b) in diff.items())
        raise ResumeMismatch(
            f"{path} was trained with other parameters ({lines}). Restore them to resume, or "
            f"delete the checkpoint (or use another output folder) to start a new run; to start "
            f"from its weights, set train.resume_from to a copy of it.")


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_transfer(p, G, D, G_ema, device) -> None:
    """Load G, D and G_ema from `p.resume_from` (transfer learning: weights only; optimisers,
    kimg and p start fresh). A checkpoint of another architecture raises ResumeMismatch."""
    path = Path(p.resume_from)
    if not path.exists():
        raise FileNotFoundError(f"train.resume_from={p.resume_from!r}: no such checkpoint")
    state = load(path, map_location=device)
    diff = differing_keys(state.get("arch", {}), arch_from_params(p), keys=ARCH_KEYS)
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} != now {b!r}" for k, (a, b) in diff.items())
        raise ResumeMismatch(f"{path} has another architecture ({lines})")
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    G_ema.load_state_dict(state["G_ema"])
