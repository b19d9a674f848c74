"""bf16 autocast: the numerically delicate parts stay fp32, and a bf16 run trains (on CPU)."""

from __future__ import annotations

import torch

from gan_helpers import make_dataset, tiny
from spidergan.gan import checkpoint as ckpt_mod
from spidergan.gan import train
from spidergan.gan.networks import MinibatchStdLayer, modulated_conv2d


def test_auto_precision_is_fp32_on_cpu():
    assert not train.use_bf16(tiny(), torch.device("cpu"))
    assert train.use_bf16(tiny(precision="bf16"), torch.device("cpu"))


def test_demodulation_and_minibatch_std_in_fp32_under_autocast():
    torch.manual_seed(0)
    x, w = torch.randn(4, 32, 8, 8), torch.randn(16, 32, 3, 3)
    styles = torch.randn(4, 32)
    ref = modulated_conv2d(x, w, styles)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = modulated_conv2d(x, w, styles.bfloat16())
    assert out.dtype == torch.bfloat16  # the convolution itself runs in bf16
    # demodulated in fp32: output channels keep unit scale, only bf16 rounding of the conv
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    mb = MinibatchStdLayer(4)
    h = torch.randn(8, 16, 4, 4) * 0.3 + 100.0  # small spread on a large mean: bf16 maths
    # would be ~12% off here
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mb(h.bfloat16())
    exact = mb(h.bfloat16().float())[:, -1]
    torch.testing.assert_close(y[:, -1].float(), exact, atol=2e-3, rtol=2e-2)


def test_bf16_channels_last_run_trains_and_checkpoints_fp32(tmp_path):
    ds = make_dataset(tmp_path, resolution=16, n=12)
    r = train.run(tiny(precision="bf16", channels_last=True, kimg=0.016), 0, dataset=ds,
                  out=tmp_path / "o",
                  live_dir=None, metrics_path=None, progress=False)
    assert r["steps"] == 4
    state = ckpt_mod.load(tmp_path / "o" / train.CHECKPOINT_NAME)
    for v in state["G"].values():
        assert v.dtype == torch.float32 and torch.isfinite(v).all()


def test_compile_wiring_gives_the_eager_weights(tmp_path, monkeypatch):
    """train.compile: G (mapping, synthesis) and D of the main losses go through torch.compile
    (here with the aot_eager backend: inductor's C++ build takes minutes on CPU), the
    regularisers stay eager, and the weights after the run are the eager run's."""
    import functools

    from torch._dynamo.utils import counters

    ds = make_dataset(tmp_path, resolution=16, n=12)
    kw = dict(kimg=0.008, snap_kimg=0.008, augment="none")
    train.run(tiny(**kw), 0, dataset=ds, out=tmp_path / "e", live_dir=None, metrics_path=None,
              progress=False)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    counters.clear()
    train.run(tiny(compile=True, **kw), 0, dataset=ds, out=tmp_path / "c", live_dir=None,
              metrics_path=None, progress=False)
    assert counters["stats"]["unique_graphs"] >= 3  # mapping, synthesis, D
    a = ckpt_mod.load(tmp_path / "e" / train.CHECKPOINT_NAME)
    b = ckpt_mod.load(tmp_path / "c" / train.CHECKPOINT_NAME)
    for net in ("G", "D"):
        for k in a[net]:
            torch.testing.assert_close(a[net][k], b[net][k], atol=1e-6, rtol=0)
