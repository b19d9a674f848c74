"""Training speed and peak memory of our StyleGAN2 (+ ADA), `python bench/train.py`.

For each resolution (32 and 64 px on CPU; 256 px too when a GPU is present) two runs of the real
trainer (`spidergan.gan.train.run`) on random images, each in its own process so its peak
memory is its own:

    full  the committed `train` params (augmentation, lazy R1 + path length, style mixing, EMA)
    bare  the same networks with only the two main losses (no augmentation, no regularisers,
          no EMA): the baseline measured alongside

and prints seconds per kimg (the trainer's own figure: mean over its log ticks, the first tick
and snapshots excluded), images per second,
peak memory (RSS on CPU, max allocated on GPU), and full/bare as the ratio: the cost of
everything StyleGAN2 + ADA adds on top of a plain GAN step (goal <= 1.5x).

    --kimg K     length of each run (default 0.128 on CPU, 1 on GPU)
    --res 32,64  resolutions on CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _child(cfg: dict) -> None:
    # spidergan.gan first: it sets OpenMP's passive wait policy, which only acts before torch
    # is imported (busy-waiting threads make shared CPUs many times slower)
    from spidergan.gan import train  # noqa: I001
    from spidergan import params

    import numpy as np
    import torch

    p = params.load(ROOT / "params.yaml").train
    over = {"resolution": cfg["res"], "kimg": cfg["kimg"], "snap_kimg": cfg["kimg"],
            "device": cfg["device"], "resume_from": ""}
    over.update(cfg.get("train", {}))
    if cfg["mode"] == "bare":
        over.update(augment="none", r1_gamma=0.0, pl_weight=0.0, ema_kimg=0.0, style_mixing=0.0)
    p = dataclasses.replace(p, **over)
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "ds"
        ds.mkdir()
        rng = np.random.default_rng(0)
        np.save(ds / "train.npy", rng.integers(0, 256, (256, cfg["res"], cfg["res"], 3), np.uint8))
        t = time.time()
        result = train.run(p, 0, dataset=ds, out=Path(tmp) / "out", live_dir=None,
                           metrics_path=None, progress=False)
        wall = time.time() - t
    if p.device != "cpu" and torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"sec_per_kimg": result["sec_per_kimg"], "img_per_s": result["img_per_s"],
                      "peak_mib": peak, "wall_s": wall}))


def _measure(cfg: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], check=True,
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--kimg", type=float)
    ap.add_argument("--res", default="32,64")
    args = ap.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return 0
    import torch

    runs = [(int(r), "cpu", {}) for r in args.res.split(",")]
    if torch.cuda.is_available():
        # the original project's architecture (config-f) at 256 px, batch 32
        runs.append((256, "cuda", {"channel_base": 32768, "channel_max": 512, "mapping_layers": 8,
                                   "z_dim": 512, "w_dim": 512, "batch": 32}))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for res, device, train_over in runs:
        kimg = args.kimg or (1.0 if device == "cuda" else 0.256)
        r = {m: _measure({"res": res, "kimg": kimg, "device": device, "mode": m,
                          "train": train_over}) for m in ("full", "bare")}
        f, b = r["full"], r["bare"]
        mem = "GPU max allocated" if device == "cuda" else "peak RSS"
        print(f"{res}px {device}: full {f['sec_per_kimg']:.1f} s/kimg ({f['img_per_s']:.1f} img/s, "
              f"{mem} {f['peak_mib']:.0f} MiB); bare {b['sec_per_kimg']:.1f} s/kimg "
              f"({b['peak_mib']:.0f} MiB); ratio full/bare {f['sec_per_kimg'] / b['sec_per_kimg']:.2f}x "
              f"(goal <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
