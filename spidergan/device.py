"""The one device picker: `auto` is the first CUDA device when present, else the CPU.

torch is imported inside the functions: spidergan.gan sets OpenMP's wait policy before torch is
first imported, and importing this module must not get there first."""

from __future__ import annotations


def pick(name: str, local_rank: int = 0):
    """torch.device for `auto`, `cpu`, `cuda` (device `local_rank`, made current), `cuda:N` or
    a bare index `N`. Asking for CUDA without one is an error, not a silent CPU run."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.isdigit():
        name = f"cuda:{name}"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name} asked for, but no CUDA device is available")
        dev = torch.device(name) if ":" in name else torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        return dev
    return torch.device(name)


def ultralytics_arg(name: str) -> str:
    """A device setting as Ultralytics takes it ("cpu", "0", "0,1"): `auto` resolved as `pick`
    resolves it, anything else handed through (Ultralytics reads index lists itself)."""
    if name != "auto":
        return name
    dev = pick(name)
    return "cpu" if dev.type == "cpu" else str(dev.index or 0)
