"""Inception-feature metrics: FID, KID, MiFID (torchmetrics) and k-NN precision/recall.

Features are the 2048-d pool features of the standard FID Inception-v3 (TensorFlow weights
converted by torch-fidelity, `weights-inception-2015-12-05-6726825d.pth`), computed once per
image set and fed to torchmetrics' `FrechetInceptionDistance`, `KernelInceptionDistance` and
`MemorizationInformedFrechetInceptionDistance` through a pass-through feature module, so the
three metrics share one Inception pass. torchmetrics has no image precision/recall, so
`precision_recall` implements the k-NN manifolds of Kynkaanniemi et al. 2019 on the same features.

Weights: looked up in $TORCH_HOME/hub/checkpoints (where torchmetrics/torch-fidelity would
download them). `ensure_weights(fetch=True)` downloads them when the network is reachable; with
`SPIDERGAN_OFFLINE=1` or the test network guard on, it never tries and raises
`InceptionUnavailable` naming the file and how to get it. The file is read with
`torch.load(weights_only=True)` before torch-fidelity sees it (torch-fidelity itself would
unpickle it unrestricted).

Real-image features are cached in `.spidergan/eval_cache/` under a key built from the dataset's
sha256 and the extractor's identity, so experiments on the same data skip the real pass. Whole
feature matrices are cached, not only mean and covariance, because KID, MiFID and precision/recall
need every vector.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from spidergan import atomic
from spidergan.digest import file_sha256

log = logging.getLogger(__name__)

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_NAME)
FEATURE_DIM = 2048
INCEPTION_KEYS = ("fid", "kid_mean", "kid_std", "mifid", "precision", "recall")


class InceptionUnavailable(RuntimeError):
    """The standard FID Inception weights are not here and cannot be fetched now."""


class TooFewImages(ValueError):
    """An image set is too small for a metric; the message names the metric and the fix."""


# --------------------------------------------------------------------------- weights
def weights_path() -> Path:
    """Where torch.hub (and so torchmetrics/torch-fidelity) keeps the weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def fetch_allowed() -> bool:
    """False where downloads must not even be tried (offline flag, test network guard)."""
    return not (os.environ.get("SPIDERGAN_OFFLINE") == "1"
                or os.environ.get("SPIDERGAN_NETGUARD") == "1")


def _shown(path: Path) -> str:
    """The path relative to the working directory when inside it (metrics files travel)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def missing_message(path: Path, why: str = "") -> str:
    return (f"standard FID Inception weights missing: {_shown(path)}{f' ({why})' if why else ''}; "
            f"get them with `spidergan fetch-inception` (needs internet) or download "
            f"{WEIGHTS_URL} to that path")


def ensure_weights(fetch: bool | None = None, timeout: float = 10.0) -> Path:
    """Path of the weights file; downloads it when absent and `fetch` (default: allowed here)."""
    path = weights_path()
    if path.is_file():
        return path
    if fetch is None:
        fetch = fetch_allowed()
    if not fetch:
        raise InceptionUnavailable(missing_message(path, "not downloaded at run time"))
    host = WEIGHTS_URL.split("/")[2]
    try:
        # a quick reachability check, so an offline machine fails in seconds, not a TCP timeout
        socket.create_connection((host, 443), timeout=timeout).close()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(path) as tmp:
            torch.hub.download_url_to_file(WEIGHTS_URL, str(tmp), progress=False)
    except Exception as e:  # noqa: BLE001 - any failure means: not available now
        raise InceptionUnavailable(missing_message(path, f"download failed: {e}")) from None
    return path


# --------------------------------------------------------------------------- extractor
class FeatureExtractor:
    """uint8 NCHW images (any size) -> float64 (N, dim) features; `id` names it for caches."""

    def __init__(self, net: torch.nn.Module, ident: str, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.id = ident

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
        return self.net(images.to(self.device)).double().cpu().reshape(len(images), -1)

    def features(self, images: np.ndarray, batch: int = 32, desc: str = "inception",
                 progress: bool = True) -> np.ndarray:
        """Features of uint8 NHWC images, in batches."""
        out = []
        for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch", disable=not progress):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).permute(0, 3, 1, 2)
            out.append(self(x).numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


def load_inception(path: str | Path, device: torch.device | str = "cpu") -> FeatureExtractor:
    """torchmetrics' Inception (2048-d pool features) with the weights at `path`."""
    from torchmetrics.image.fid import NoTrainInceptionV3
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        raise InceptionUnavailable("torch-fidelity is not installed (pip install torch-fidelity); "
                                   "torchmetrics needs it for the standard FID Inception")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InceptionUnavailable(f"{path}: not a readable weights file ({e}); delete it and "
                                   f"fetch it again ({WEIGHTS_URL})") from None
    buf = io.BytesIO()
    torch.save(state, buf)  # plain tensors only: safe for torch-fidelity's unrestricted load
    buf.seek(0)
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(FEATURE_DIM)],
                             feature_extractor_weights_path=buf)
    return FeatureExtractor(net, f"inception{FEATURE_DIM}-{file_sha256(path)[:16]}", device)


def inception_for_mode(mode: str, device: torch.device | str = "cpu"
                       ) -> tuple[FeatureExtractor | None, str | None]:
    """(extractor, warning) for `evaluate.fid`: auto -> None + warning when unavailable;
    on -> raises InceptionUnavailable; off -> (None, None)."""
    if mode == "off":
        return None, None
    try:
        # only look for the file: a stage never downloads (`spidergan fetch-inception` does)
        return load_inception(ensure_weights(fetch=False), device), None
    except InceptionUnavailable as e:
        if mode == "on":
            raise
        return None, f"Inception metrics skipped: {e}"


# --------------------------------------------------------------------------- cache
def cached(cache_dir: str | Path | None, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """`compute()` once per key; the result lives in `cache_dir/<key>.npy`."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{key}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("feature cache %s unreadable (%s): recomputing", path, e)
    value = compute()
    with atomic.atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, value, allow_pickle=False)
    return value


# --------------------------------------------------------------------------- metrics
class _GivenFeatures(torch.nn.Module):
    """Identity 'feature extractor': lets torchmetrics take features computed elsewhere."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _as_tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def check_counts(n_real: int, n_fake: int) -> None:
    if n_real < 2 or n_fake < 2:
        raise TooFewImages(f"FID/KID/precision-recall need at least 2 real and 2 generated images "
                           f"(got {n_real} real, {n_fake} generated): raise dataset.size or "
                           f"evaluate.num_fakes")


def fid(real, fake) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _as_tensor(real), _as_tensor(fake)
    check_counts(len(real), len(fake))
    m = FrechetInceptionDistance(feature=_GivenFeatures(real.shape[1]))
    m.update(real, real=True)
    m.update(fake, real=False)
    return float(m.compute())


def kid(real, fake, subsets: int = 100, subset_size: int = 1000, seed: int = 0
        ) -> tuple[float, float, int]:
    """(kid_mean, kid_std, subset size used): the subset size is reduced to the smaller set."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _as_tensor(real), _as_tensor(fake)
    check_counts(len(real), len(fake))
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": they are ours already
        warnings.simplefilter("ignore", UserWarning)
        m = KernelInceptionDistance(feature=_GivenFeatures(real.shape[1]), subsets=subsets,
                                    subset_size=size)
    m.update(real, real=True)
    m.update(fake, real=False)
    with torch.random.fork_rng():  # the subsets are drawn with torch's global generator
        torch.manual_seed(seed)
        mean, std = m.compute()
    return float(mean), float(std), size


def mifid(real, fake, eps: float = 0.1) -> float:
    from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance

    real, fake = _as_tensor(real), _as_tensor(fake)
    check_counts(len(real), len(fake))
    m = MemorizationInformedFrechetInceptionDistance(feature=_GivenFeatures(real.shape[1]),
                                                     cosine_distance_eps=float(eps))
    m.update(real, real=True)
    m.update(fake, real=False)
    return float(m.compute())


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)
        d[torch.arange(d.shape[0]), torch.arange(i, i + d.shape[0])] = float("inf")
        out.append(d.kthvalue(k, dim=1).values)
    return torch.cat(out)


def _inside(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, chunk: int = 1024
            ) -> torch.Tensor:
    """Per query row: inside at least one ball (ref row, its radius)."""
    out = []
    for i in range(0, len(query), chunk):
        out.append((torch.cdist(query[i:i + chunk], ref) <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(real, fake, k: int = 3) -> tuple[float, float, int]:
    """Improved precision and recall (Kynkaanniemi et al. 2019), Euclidean k-NN manifolds.

    precision: share of fakes inside the real manifold (union of balls around each real with
    radius its distance to its k-th nearest real); recall: share of reals inside the fake
    manifold. k is reduced to (smaller set size - 1) when larger; returns the k used.
    """
    real, fake = _as_tensor(real), _as_tensor(fake)
    check_counts(len(real), len(fake))
    k_used = min(k, len(real) - 1, len(fake) - 1)
    prec = _inside(fake, real, _kth_neighbour_radii(real, k_used)).double().mean()
    rec = _inside(real, fake, _kth_neighbour_radii(fake, k_used)).double().mean()
    return float(prec), float(rec), k_used


def inception_metrics(real, fake, *, kid_subsets: int = 100, kid_subset_size: int = 1000,
                      mifid_eps: float = 0.1, pr_k: int = 3, seed: int = 0) -> tuple[dict, list[str]]:
    """All Inception metrics as flat keys, plus notes for every reduced setting."""
    notes = []
    out = {"fid": fid(real, fake)}
    out["kid_mean"], out["kid_std"], size = kid(real, fake, kid_subsets, kid_subset_size, seed)
    out["kid_subset_size"] = size
    if size < kid_subset_size:
        notes.append(f"kid_subset_size reduced from {kid_subset_size} to {size} "
                     f"(only {len(real)} real / {len(fake)} generated images)")
    out["mifid"] = mifid(real, fake, mifid_eps)
    out["precision"], out["recall"], k_used = precision_recall(real, fake, pr_k)
    out["pr_k"] = k_used
    if k_used < pr_k:
        notes.append(f"pr_k reduced from {pr_k} to {k_used} (too few images for k={pr_k})")
    return out, notes

