"""The dataset stage and the training loader.

Layout of `data/dataset/`:
    train.npy             uint8 [N, resolution, resolution, 3], the packed training images
    manifest.jsonl        one record per training image, in train.npy order: id, index,
                          source file, provenance carried from upstream
    holdout/images/<id>.png, holdout/manifest.jsonl
                          real images kept OUT of training (evaluate's copy check compares
                          generated images with training images against these)
    rejects.jsonl         upstream records that could not be used, with a reason
    info.json             resolution, counts, sha256 of train.npy (recorded in checkpoints)

Selection is seeded: the upstream records are shuffled with `seed`, the first `holdout` go to
holdout, the next `size` to training. A `size` larger than what remains uses everything and says
so (in the log and in metrics).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from spidergan import atomic, manifest
from spidergan.images import ImageRejected, load_rgb
from spidergan.params import DatasetParams

log = logging.getLogger(__name__)

_RESAMPLE = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR,
             "box": Image.BOX}


def _square(im: Image.Image) -> Image.Image:
    """Centre square; upstream crops are square already, this only guards odd inputs."""
    w, h = im.size
    if w == h:
        return im
    s = min(w, h)
    x0, y0 = (w - s) // 2, (h - s) // 2
    return im.crop((x0, y0, x0 + s, y0 + s))


def run(p: DatasetParams, resolution: int, seed: int, inputs: dict, *, out: str | Path,
        metrics_path: str | Path | None = None) -> dict:
    """Build the packed dataset from `inputs[p.source] = (manifest path, root of its files)`."""
    if p.source not in inputs:
        raise ValueError(f"dataset.source={p.source!r} has no input configured")
    man_path, root = (Path(x) for x in inputs[p.source])
    if not man_path.exists():
        raise FileNotFoundError(f"{man_path} is missing: run the upstream stage first")
    out = Path(out)
    records = sorted(manifest.read_by_id(man_path).values(), key=lambda r: r["id"])
    order = np.random.default_rng(seed).permutation(len(records))
    resample = _RESAMPLE[p.resample]
    images, train_recs, hold_recs, rejects = [], [], [], []
    hold_dir = out / "holdout" / "images"
    hold_dir.mkdir(parents=True, exist_ok=True)
    want = p.holdout + p.size
    for i in tqdm(order, desc="dataset", unit="img", total=min(want, len(records))):
        if len(hold_recs) + len(train_recs) >= want:
            break
        rec = records[int(i)]
        try:
            im = load_rgb(root / rec["file"])
        except ImageRejected as e:
            rejects.append({"id": rec["id"], "reason": e.reason, "detail": e.detail})
            continue
        except KeyError:
            rejects.append({"id": rec.get("id"), "reason": "no_file", "detail": "record has no file"})
            continue
        im = _square(im).resize((resolution, resolution), resample)
        base = {"id": rec["id"], "file_upstream": rec["file"], "source": p.source,
                "provenance": rec.get("provenance", {})}
        if len(hold_recs) < p.holdout:
            f = f"holdout/images/{rec['id']}.png"
            atomic.save_image(out / f, im)
            hold_recs.append({**base, "file": f})
        else:
            train_recs.append({**base, "index": len(images)})
            images.append(np.asarray(im, dtype=np.uint8))
    if not images:
        from spidergan import outcome

        reasons: dict = {"held_out": len(hold_recs)}
        for r in rejects:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        outcome.refuse_empty("dataset", f"no training images from {len(records)} upstream records",
                             reasons, f"dataset.holdout {p.holdout} takes the first images"
                             if hold_recs else "")
    arr = np.stack(images)
    buf = io.BytesIO()
    np.save(buf, arr)
    data = buf.getvalue()
    atomic.write_bytes(out / "train.npy", data)
    manifest.write(out / "manifest.jsonl", train_recs)
    manifest.write(out / "holdout" / "manifest.jsonl", hold_recs)
    manifest.write(out / "rejects.jsonl", rejects)
    short = len(train_recs) < p.size
    if short:  # said once (a log warning and a print showed it twice)
        print(f"dataset: size={p.size} requested, only {len(train_recs)} available; using all")
    from spidergan import outcome

    reasons: dict = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    outcome.summary("dataset", f"{len(train_recs)} training images at {resolution} px, "
                    f"{len(hold_recs)} held out", reasons)
    info = {"resolution": resolution, "train": len(train_recs), "holdout": len(hold_recs),
            "rejected": len(rejects), "upstream": len(records), "requested": p.size,
            "used_all": short, "source": p.source, "sha256": hashlib.sha256(data).hexdigest()}
    atomic.write_json(out / "info.json", info)
    if metrics_path:
        atomic.write_metrics(metrics_path, info)
    return info


# --------------------------------------------------------------------------- loader
class ImageDataset:
    """The packed images, memory-mapped; batches are NCHW float in [-1, 1].

    The sampling order is a pure function of (seed, step): epoch e is a permutation drawn from
    seed + e, so a resumed run draws exactly the batches the uninterrupted run would have.
    """

    def __init__(self, root: str | Path):
        root = Path(root)
        self.root = root
        path = root / "train.npy"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `spidergan dataset` (dvc stage dataset)")
        self.images = np.load(path, mmap_mode="r")
        if self.images.ndim != 4 or self.images.shape[3] != 3:
            raise ValueError(f"{path}: expected [N, H, W, 3], got {self.images.shape}")
        info = root / "info.json"
        self.info = json.loads(info.read_text()) if info.exists() else {}
        self.resolution = int(self.images.shape[1])
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def fingerprint(self) -> str:
        return self.info.get("sha256") or hashlib.sha256(
            (self.root / "train.npy").read_bytes()).hexdigest()

    def _perm(self, seed: int, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, np.random.default_rng([seed, epoch]).permutation(len(self)))
        return self._perm_cache[1]

    def to_device(self, device: torch.device, max_mib: int) -> str:
        """Decode once: keep the whole uint8 array on `device` when it fits in `max_mib`
        (batches are then gathered and converted on the GPU, the host only computes indices),
        else in pinned host memory (copied asynchronously). Returns where it went."""
        if device.type != "cuda":
            return "host (memory-mapped)"
        nbytes = self.images.size
        arr = torch.from_numpy(np.ascontiguousarray(self.images))
        if nbytes <= max_mib * 2**20:
            self._resident = arr.to(device)
            return f"{device} ({nbytes / 2**20:.0f} MiB)"
        self._resident = arr.pin_memory()
        return f"pinned host memory ({nbytes / 2**20:.0f} MiB)"

    def batch(self, step: int, batch_size: int, seed: int, mirror: bool, rank: int = 0,
              world: int = 1, device: torch.device | None = None) -> torch.Tensor:
        """Step `step`'s batch of `batch_size` images (the global batch), or with `world` > 1
        rank `rank`'s share of it: samples rank, rank + world, ... (strided, so that the
        minibatch-std groups of `batch_size / world` images per rank are the groups one
        process would form over the whole batch when the group size is the per-rank batch)."""
        n = len(self)
        start = step * batch_size
        ks = range(start + rank, start + batch_size, world)
        idx = [int(self._perm(seed, k // n)[k % n]) for k in ks]
        flips = None
        if mirror:
            flips = np.random.default_rng([seed, step, 1]).random(batch_size)[rank::world] < 0.5
        resident = getattr(self, "_resident", None)
        if resident is not None and device is not None:
            if resident.device.type == "cuda":
                # pinned source: the copy is queued, the host does not wait for the GPU
                u8 = resident[torch.as_tensor(idx).pin_memory().to(resident.device,
                                                                   non_blocking=True)]
            else:
                u8 = resident[torch.as_tensor(idx)].pin_memory().to(device, non_blocking=True)
        else:
            u8 = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
            if device is not None:
                u8 = u8.to(device)
        # NHWC uint8 -> NCHW float: the permuted view is channels-last in memory
        x = u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if flips is not None:
            f = torch.from_numpy(flips)
            if x.device.type == "cuda":
                f = f.pin_memory().to(x.device, non_blocking=True)
            f = f.reshape(-1, 1, 1, 1)
            x = torch.where(f, x.flip(3), x)  # no boolean indexing: no host sync
        return x.contiguous()

    def sample(self, count: int, seed: int) -> torch.Tensor:
        """A fixed, seeded set of images (grids, SWD reference)."""
        idx = np.random.default_rng(seed).permutation(len(self))[:count]
        x = torch.from_numpy(np.ascontiguousarray(self.images[np.sort(idx)])).permute(0, 3, 1, 2)
        return x.float() / 127.5 - 1.0
