"""The GPU path (skipped without CUDA; run by bench/gpu_check.sh on a machine with a GPU).

Same checks as on CPU, where the device changes the arithmetic: augmentation geometry under
CUDA bf16 autocast equals float32 and the CPU's; the antialiased resampling gives the CPU's
figures; a tiny bf16 run with the GPU-resident dataset trains, checkpoints fp32 weights and
resumes close to the uninterrupted run's weights.
"""

from __future__ import annotations

import pytest
import torch

from gan_helpers import make_dataset, replace, tiny
from spidergan.gan import checkpoint, train, warp
from spidergan.gan.augment import AugmentPipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_augment_geometry_under_cuda_bf16_autocast_equals_float32_and_cpu():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 256, 256, generator=g) * 2 - 1
    for filt in warp.FILTERS:
        pipe = AugmentPipe("bg", p=1.0, filter=filt)
        pipe.record = True
        cpu = pipe(x, generator=torch.Generator().manual_seed(1))
        theta = pipe.last["geom_theta"].cuda()
        pipe = pipe.cuda()
        xc = x.cuda()
        ref = warp.warp(xc, theta, filt)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = warp.warp(xc, theta, filt)
            grid = warp.sampling_grid(theta, (8, 3, 512, 512))
        assert torch.equal(out, ref)
        assert torch.equal(grid, warp.sampling_grid(theta, (8, 3, 512, 512)))
        torch.testing.assert_close(ref.cpu(), cpu, atol=2e-4, rtol=0)


def test_antialias_sharpness_on_cuda():
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    img = ((((yy // 16) + (xx // 16)) % 2).float() * 2 - 1)[None, None].expand(1, 3, 32, 32)
    theta = torch.tensor([[[1.0, 0.0, -1 / 32], [0.0, 1.0, -1 / 32]]])
    out = warp.warp(img.cuda(), theta.cuda(), "antialias").cpu()
    energy = float((out[..., :, 1:] - out[..., :, :-1]).square().mean()
                   + (out[..., 1:, :] - out[..., :-1, :]).square().mean())
    assert energy == pytest.approx(0.204, rel=0.10)


def test_bf16_cuda_run_resumes_like_the_uninterrupted_run(tmp_path):
    ds = make_dataset(tmp_path)
    p = tiny(device="cuda", precision="auto", augment_filter="auto", kimg=0.032)

    def run(q, out):
        return train.run(q, 0, dataset=ds, out=tmp_path / out, live_dir=None, metrics_path=None,
                         progress=False)

    r = run(p, "straight")
    assert r["device"] == "cuda" and r["steps"] == 8
    run(replace(p, kimg=0.016), "resumed")
    run(p, "resumed")
    a = checkpoint.load(tmp_path / "straight" / train.CHECKPOINT_NAME)
    b = checkpoint.load(tmp_path / "resumed" / train.CHECKPOINT_NAME)
    for part in ("G", "D", "G_ema"):
        for k, v in a[part].items():
            assert v.dtype == torch.float32 and torch.isfinite(v).all(), k
            # cuDNN picks its algorithms per process (benchmark mode) and bf16 rounds: Adam
            # turns sign noise in tiny gradients into steps of up to lr, so allow a few of them
            torch.testing.assert_close(v, b[part][k], atol=0.02, rtol=0, msg=f"{part}.{k}")
    assert a["step"] == b["step"] == 8
