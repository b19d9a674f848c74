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

On a CUDA device, in addition (issue "train fast on GPUs"): 256 px with NVIDIA's 'auto'
config for one GPU (batch 16, channel_base 16384, channel_max 512, 2 mapping layers, z/w 512,
R1 gamma auto = 0.0002 * 256^2 / 16, EMA 5 kimg, ADA bgc, antialiased resampling) in four
variants, eager vs torch.compile and fp32 vs bf16 autocast, plus two at a fixed p = 0.6 with
the antialiased and the bilinear augmentation filter (what the 2x path costs), each its own
process; prints the card's name and seconds per kimg
against the goal (< 12.5 s/kimg on one H100; NVIDIA's stylegan2-ada-pytorch does 12.5 on an
A100, 21.6-24.2 on a V100). NVIDIA's code itself is not run here (it is not installed and needs
its custom CUDA extensions), so the "0.8 x NVIDIA on the same card" goal needs that run added
by hand on the same machine.

    --kimg K     length of each run (default 0.256 on CPU, 1 on GPU)
    --res 32,64  resolutions on CPU
    --gpu-only   skip the CPU runs
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


AUTO_256 = {"resolution": 256, "batch": 16, "channel_base": 16384, "channel_max": 512,
            "mapping_layers": 2, "z_dim": 512, "w_dim": 512, "mbstd_group": 4,
            "r1_gamma": "auto", "ema_kimg": 16 * 10 / 32, "lr_g": 0.0025, "ada_kimg": "auto",
            "lr_d": 0.0025, "augment": "ada", "augpipe": "bgc", "conv_clamp": 256.0,
            "augment_filter": "antialias"}
GPU_VARIANTS = (("eager fp32", {"precision": "fp32", "compile": False}),
                ("eager bf16", {"precision": "bf16", "compile": False}),
                ("compiled fp32", {"precision": "fp32", "compile": True}),
                ("compiled bf16", {"precision": "bf16", "compile": True}),
                # what the anti-aliased 2x resampling costs (augment p starts at 0 under ADA:
                # aug_prob 0.6 makes the pipe work from the first step, as late in a run)
                ("eager bf16, p=0.6 antialias", {"precision": "bf16", "aug_prob": 0.6,
                                                 "augment": "fixed"}),
                ("eager bf16, p=0.6 bilinear", {"precision": "bf16", "aug_prob": 0.6,
                                                "augment": "fixed",
                                                "augment_filter": "bilinear"}))
GOAL_S_PER_KIMG = 12.5


def _child(cfg: dict) -> None:
    # spidergan.gan first: it sets OpenMP's passive wait policy, which only acts before torch
    # is imported (busy-waiting threads make shared CPUs many times slower)
    from spidergan.gan import train  # noqa: I001
    from spidergan import params

    import numpy as np
    import torch

    p = params.load(ROOT / "params.yaml").train
    over = {"resolution": cfg["res"], "kimg": cfg["kimg"], "snap_kimg": cfg["kimg"],
            "device": cfg["device"], "resume_from": "", "grid": 2}
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
    ap.add_argument("--gpu-only", action="store_true")
    args = ap.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return 0
    import torch

    runs = [] if args.gpu_only else [(int(r), "cpu", {}) for r in args.res.split(",")]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for res, device, train_over in runs:
        kimg = args.kimg or 0.256
        r = {m: _measure({"res": res, "kimg": kimg, "device": device, "mode": m,
                          "train": train_over}) for m in ("full", "bare")}
        f, b = r["full"], r["bare"]
        print(f"{res}px {device}: full {f['sec_per_kimg']:.1f} s/kimg ({f['img_per_s']:.1f} img/s, "
              f"peak RSS {f['peak_mib']:.0f} MiB); bare {b['sec_per_kimg']:.1f} s/kimg "
              f"({b['peak_mib']:.0f} MiB); ratio full/bare {f['sec_per_kimg'] / b['sec_per_kimg']:.2f}x "
              f"(goal <= 1.5x)")
    if not torch.cuda.is_available():
        print("GPU part skipped: no CUDA device (256 px 'auto' config, eager/compiled, fp32/bf16)")
        return 0
    card = torch.cuda.get_device_name(0)
    kimg = args.kimg or 1.0
    print(f"GPU: {card}, 256 px 'auto' config (batch 16, channel_base 16384, 2 mapping "
          f"layers), {kimg} kimg per run, mean over the log ticks after the first (compilation excluded)")
    base = None
    for name, over in GPU_VARIANTS:
        try:
            r = _measure({"res": 256, "kimg": kimg, "device": "cuda", "mode": "full",
                          "train": {**AUTO_256, **over}})
        except subprocess.CalledProcessError as e:
            print(f"  {name}: FAILED\n{e.stderr[-2000:]}")
            continue
        base = base or r["sec_per_kimg"]
        print(f"  {name}: {r['sec_per_kimg']:.2f} s/kimg ({r['img_per_s']:.0f} img/s, GPU max "
              f"allocated {r['peak_mib']:.0f} MiB, {r['wall_s']:.0f} s wall); vs eager fp32 "
              f"{r['sec_per_kimg'] / base:.2f}x; vs goal {GOAL_S_PER_KIMG} s/kimg "
              f"{r['sec_per_kimg'] / GOAL_S_PER_KIMG:.2f}x (goal < 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
