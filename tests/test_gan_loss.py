"""StyleGAN2 losses and optimiser setup against analytic values and finite differences.

Each test pins one formula to a number computed independently of loss.py / build.py: the
logistic losses of known logits, R1 of a linear D (gradient = its weight), the path-length
regulariser of a generator whose Jacobian is taken by central finite differences, the lazy
regularisation's Adam correction (StyleGAN2 appendix B), and D's real/fake logits separating
in a short CPU training run.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gan_helpers import make_dataset, tiny
from spidergan.gan import build, train
from spidergan.gan.loss import StyleGAN2Loss

torch.set_num_threads(1)


class StubG(nn.Module):
    """z [N, L*K] -> ws [N, L, K] (mapping), ws -> images [N, 3, H, W] = tanh(ws A) (synthesis)."""

    img_channels = 3

    def __init__(self, layers=2, k=3, res=4, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.L, self.K, self.res = layers, k, res
        self.A = nn.Parameter(torch.randn(layers * k, 3 * res * res, generator=g, dtype=dtype) * 0.5)
        self.one = nn.Parameter(torch.ones([], dtype=dtype))  # ws depend on a parameter, as in G

    def mapping(self, z, update_w_avg=True):
        return z.reshape(z.shape[0], self.L, self.K) * self.one

    def synthesis(self, ws):
        return torch.tanh(ws.reshape(ws.shape[0], -1) @ self.A).reshape(-1, 3, self.res, self.res)


class ConstG(nn.Module):
    """Every image is the constant `value` (a parameter, so G's loss has a gradient)."""

    img_channels = 3

    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(value)))

    def mapping(self, z, update_w_avg=True):
        return z[:, None, :]

    def synthesis(self, ws):
        return self.value * torch.ones(ws.shape[0], 3, 4, 4) + 0 * ws.sum()


class LinearD(nn.Module):
    """D(x) = <W, x> + b per image."""

    def __init__(self, scale=1.0, bias=0.0):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.W = nn.Parameter(torch.randn(3, 4, 4, generator=g) * scale)
        self.b = nn.Parameter(torch.tensor(float(bias)))

    def forward(self, x):
        return ((x * self.W).sum(dim=[1, 2, 3]) + self.b)[:, None]


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_all_zero_logits_give_2ln2_for_d_and_ln2_for_g():
    loss = StyleGAN2Loss(ConstG(0.3), LinearD(scale=0.0), None, style_mixing=0.0)
    z, real = torch.randn(4, 5), torch.rand(4, 3, 4, 4)
    ld, rl, fl = loss.d_main(z, real)
    assert torch.all(rl == 0) and torch.all(fl == 0)
    assert float(ld.detach()) == pytest.approx(2 * math.log(2), abs=1e-6)
    assert float(loss.g_main(z).detach()) == pytest.approx(math.log(2), abs=1e-6)


def test_logistic_losses_of_known_logits():
    # D(x) = <W, x> + b; reals are a constant image r, fakes the constant image f
    G, D = ConstG(-0.5), LinearD(bias=0.2)
    loss = StyleGAN2Loss(G, D, None, style_mixing=0.0)
    r = 0.4
    real = torch.full((4, 3, 4, 4), r)
    sw = float(D.W.sum())
    real_logit, fake_logit = r * sw + 0.2, -0.5 * sw + 0.2
    ld, _, _ = loss.d_main(torch.randn(4, 5), real)
    # D: -log(1 - sigmoid(fake)) - log(sigmoid(real)); G (non-saturating): -log sigmoid(fake)
    assert float(ld.detach()) == pytest.approx(_softplus(fake_logit) + _softplus(-real_logit), rel=1e-5)
    assert float(loss.g_main(torch.randn(4, 5)).detach()) == pytest.approx(_softplus(-fake_logit), rel=1e-5)


@pytest.mark.parametrize("gamma,gain", [(1.0, 1), (10.0, 16)])
def test_r1_of_a_linear_d_is_half_gamma_times_squared_weight_norm(gamma, gain):
    D = LinearD()
    loss = StyleGAN2Loss(ConstG(0.0), D, None, r1_gamma=gamma)
    real = torch.rand(4, 3, 4, 4) * 2 - 1
    # the gradient of <W, x> + b with respect to x is W, for every image
    expected = gamma / 2 * float(D.W.square().sum()) * gain
    assert float(loss.d_r1(real, gain=gain).detach()) == pytest.approx(expected, rel=1e-5)


def test_path_length_penalty_against_finite_differences():
    G = StubG()
    n, L, K, res = 4, G.L, G.K, G.res
    loss = StyleGAN2Loss(G, LinearD(), None, style_mixing=0.0, pl_weight=2.0, pl_batch_shrink=1,
                         pl_decay=0.01)
    loss.pl_mean = torch.zeros([], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(n, L * K, generator=g, dtype=torch.float64)
    y = torch.randn(n, 3, res, res, generator=g, dtype=torch.float64)
    got = float(loss.g_pl(z, gain=4, noise=y).detach())

    # |J^T y'| per sample with y' = y / sqrt(H W) (the paper's image-size normalisation),
    # J by central differences of  sum(G(w) * y')  in each coordinate of w
    yn = y / math.sqrt(res * res)
    ws = z.reshape(n, L, K)
    eps = 1e-6
    lengths = []
    with torch.no_grad():
        for i in range(n):
            grad = torch.zeros(L, K, dtype=torch.float64)
            for a in range(L):
                for b in range(K):
                    wp, wm = ws[i:i + 1].clone(), ws[i:i + 1].clone()
                    wp[0, a, b] += eps
                    wm[0, a, b] -= eps
                    grad[a, b] = ((G.synthesis(wp) * yn[i]).sum()
                                  - (G.synthesis(wm) * yn[i]).sum()) / (2 * eps)
            # mean over the ws layers of the squared norm, then the root (StyleGAN2 3.2)
            lengths.append(math.sqrt(float(grad.square().sum(1).mean())))
    pl_mean = 0.01 * sum(lengths) / n  # running mean from 0 with decay 0.01
    expected = 4 * sum(2.0 * (ln - pl_mean) ** 2 for ln in lengths) / n
    assert got == pytest.approx(expected, rel=1e-6)
    assert float(loss.pl_mean) == pytest.approx(pl_mean, rel=1e-6)


def test_lazy_adam_rescales_lr_and_betas_by_interval_over_interval_plus_one():
    prm = [nn.Parameter(torch.zeros(1))]
    opt = build.lazy_adam(prm, 0.002, 16, True)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002 * 16 / 17, rel=1e-12)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)), rel=1e-12)
    off = build.lazy_adam(prm, 0.002, 16, False)
    assert off.param_groups[0]["lr"] == 0.002 and off.param_groups[0]["betas"] == (0.0, 0.99)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("gan_loss_ds"))


def _start(p, ds, out):
    from spidergan.gan import distributed as dist_mod

    return train.start(p, 0, dist_mod.World(), torch.device("cpu"), ds, out, None)


def test_training_wires_the_lazy_correction_and_auto_gamma(ds, tmp_path):
    r = _start(tiny(lr_g=0.002, lr_d=0.003, pl_interval=4, r1_interval=8, resolution=16,
                    batch=4, r1_gamma="auto"), ds, tmp_path / "a")
    (g,), (d,) = r.opt_G.param_groups, r.opt_D.param_groups
    assert g["lr"] == pytest.approx(0.002 * 4 / 5) and g["betas"][1] == pytest.approx(0.99 ** 0.8)
    assert d["lr"] == pytest.approx(0.003 * 8 / 9) and d["betas"][1] == pytest.approx(0.99 ** (8 / 9))
    assert r.loss.r1_gamma == pytest.approx(0.0002 * 16 ** 2 / 4)  # ADA paper's heuristic
    r = _start(tiny(pl_weight=0.0, r1_gamma=0.0), ds, tmp_path / "b")
    assert r.opt_G.param_groups[0]["lr"] == 0.0025 and r.opt_D.param_groups[0]["lr"] == 0.0025


def test_d_separates_real_from_fake_logits_in_a_short_cpu_run(ds, tmp_path):
    torch.manual_seed(0)
    r = _start(tiny(kimg=1.0, augment="none", pl_weight=0.0), ds, tmp_path / "c")
    for _ in range(16):
        train.step(r)
    with torch.no_grad():
        real = r.ds.sample(16, 1)
        fake = r.G(torch.randn(16, r.p.z_dim))
        gap = float(r.D(real).mean() - r.D(fake).mean())
    assert gap > 0.3, gap  # about 1.3 here; a loss with a flipped sign drives it negative
