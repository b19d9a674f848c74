"""Masking speed on CPU at 256 px: images per second per method, and rembg's one reused session
against `rembg.remove()` with a session created per call (what a naive loop does).

    python bench/mask.py [--n 24] [--threads 1]

rembg runs the real weights when they are in $U2NET_HOME (u2netp, then u2net); without them a
stand-in network of U^2-Net-P's size (same input/output shapes, about 1.1 M parameters, built
here with torch.onnx) goes through rembg's u2net_custom session, and the report says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _standin_onnx(path: Path) -> Path:
    """An encoder-decoder of U^2-Net-P's parameter count (~1.1 M) and 320x320 in/out shapes."""
    import warnings

    import torch
    from torch import nn

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    class StandIn(nn.Module):
        def __init__(self):
            super().__init__()
            ch = [3, 32, 64, 128, 192]
            self.down = nn.ModuleList(nn.Sequential(block(a, b), block(b, b))
                                      for a, b in zip(ch, ch[1:]))
            self.up = nn.ModuleList(block(b + a if a > 3 else b, a if a > 3 else 16)
                                    for a, b in reversed(list(zip(ch, ch[1:]))))
            self.head = nn.Conv2d(16, 1, 1)

        def forward(self, x):
            skips = []
            for i, d in enumerate(self.down):
                x = d(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            skips.pop()
            for u in self.up:
                if skips:
                    s = skips.pop()
                    x = nn.functional.interpolate(x, size=s.shape[-2:], mode="bilinear")
                    x = u(torch.cat([x, s], 1))
                else:
                    x = u(x)
            d0 = torch.sigmoid(self.head(x))
            return d0, d0

    torch.manual_seed(0)
    model = StandIn().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 320, 320),), str(path), dynamo=False,
                          input_names=["input"], output_names=["d0", "d1"])
    n = sum(p.numel() for p in model.parameters())
    return path, n


def rate(fn, items) -> float:
    fn(items[0])  # warm-up (first-call allocations, lazy imports)
    t = time.perf_counter()
    for it in items:
        fn(it)
    return len(items) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24, help="crops per method")
    ap.add_argument("--per-call-n", type=int, default=6, help="crops for the per-call baseline")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # rembg's new_session reads it

    import cv2
    import torch

    from spidergan import env, params
    from spidergan.mask import rembg as mask_rembg
    from spidergan.mask import stage as mask_stage
    from spider_pictures import spider_crop

    env.setup(ROOT)
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    crops = [spider_crop(i, size=256)[0] for i in range(args.n)]
    print(f"mask bench: {args.n} synthetic crops at 256 px, CPU, {args.threads} thread(s); "
          f"machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (ratios hold, rates "
          f"drop under load)")

    res = {}
    for name, pp in (("none", {"method": "none"}), ("grabcut (committed params)", {}),
                     ("grabcut work_size=192", {"grabcut": {"work_size": 192}})):
        m = mask_stage.make_masker(params.from_dict({"mask": pp}).mask)
        res[name] = rate(lambda im: m(im, {}), crops)
        print(f"  {name:28s} {res[name]:8.1f} img/s")

    from rembg import new_session, remove
    from rembg.sessions.base import BaseSession

    model = next((m for m in ("u2netp", "u2net") if _has(m)), None)
    tmp = Path(tempfile.mkdtemp(dir=BaseSession.rembg_home()))
    try:
        if model:
            label, make = model, (lambda: new_session(model))
        else:
            path, n = _standin_onnx(tmp / "standin.onnx")
            label = f"stand-in U^2-Net-P-size net ({n / 1e6:.2f} M params; no weights here)"
            make = (lambda: new_session("u2net_custom", model_path=str(path)))
        t = time.perf_counter()
        session = make()
        open_s = time.perf_counter() - t
        ours = mask_rembg.RembgMasker(params.from_dict({"mask": {"method": "rembg"}}).mask,
                                   session=session)
        reused = rate(lambda im: ours(im, {}), crops)
        per_call = rate(lambda im: remove(im, session=make(), only_mask=True),
                        crops[:args.per_call_n])
        print(f"  rembg [{label}]")
        print(f"    session open                {open_s * 1000:8.0f} ms")
        print(f"    one reused session          {reused:8.1f} img/s")
        print(f"    remove() + session per call {per_call:8.1f} img/s")
        print(f"    reused / per call           {reused / per_call:8.2f}x (goal > 1x)")
        res["rembg"] = reused
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    g = res["grabcut (committed params)"]
    print(f"  grabcut / rembg reused        {g / res['rembg']:8.2f}x")


def _has(model: str) -> bool:
    from spidergan.mask import base as mask_base
    from spidergan.mask import rembg as mask_rembg

    try:
        mask_rembg.rembg_weights(model)
        return True
    except mask_base.MaskError:
        return False


if __name__ == "__main__":
    main()
