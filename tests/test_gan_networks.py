"""Networks: shapes, equalised lr, demodulation, resampling arithmetic, parameter names."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spidergan.gan import networks as N


def _tiny(res):
    G = N.Generator(z_dim=16, w_dim=16, img_resolution=res, mapping_layers=2, channel_base=256,
                    channel_max=32)
    D = N.Discriminator(img_resolution=res, channel_base=256, channel_max=32)
    return G, D


@pytest.mark.parametrize("res", [16, 32, 64])
def test_shapes_at_several_resolutions(res):
    torch.manual_seed(0)
    G, D = _tiny(res)
    z = torch.randn(4, 16)
    img = G(z)
    assert img.shape == (4, 3, res, res)
    assert D(img).shape == (4, 1)
    log2 = int(math.log2(res))
    assert G.num_ws == 2 * (log2 - 1)  # 1 conv at 4x4, 2 per larger block, + last toRGB
    assert G.mapping(z).shape == (4, G.num_ws, 16)
    # channels per resolution: min(channel_base // res, channel_max)
    assert G.synthesis.b4.const.shape == (32, 4, 4)
    last = getattr(G.synthesis, f"b{res}")
    assert last.conv1.weight.shape[0] == min(256 // res, 32)


def test_any_power_of_two_up_to_1024_builds():
    G = N.Generator(z_dim=8, w_dim=8, img_resolution=1024, mapping_layers=1, channel_base=1024,
                    channel_max=8)
    assert G.num_ws == 18 and hasattr(G.synthesis, "b1024")
    with pytest.raises(ValueError):
        N.Generator(img_resolution=48)
    with pytest.raises(ValueError, match="channel_base"):
        N.Discriminator(img_resolution=64, channel_base=32)


def test_parameter_names_follow_the_published_networks():
    G, D = _tiny(16)
    g, d = set(G.state_dict()), set(D.state_dict())
    for k in ("mapping.fc0.weight", "mapping.fc1.bias", "mapping.w_avg", "synthesis.b4.const",
              "synthesis.b4.conv1.weight", "synthesis.b4.conv1.noise_strength",
              "synthesis.b4.conv1.noise_const", "synthesis.b8.conv0.affine.weight",
              "synthesis.b8.conv0.affine.bias", "synthesis.b8.torgb.weight",
              "synthesis.b16.resample_filter"):
        assert k in g, k
    for k in ("b16.fromrgb.weight", "b16.conv0.weight", "b16.conv1.bias", "b16.skip.weight",
              "b8.conv1.weight", "b4.conv.weight", "b4.fc.weight", "b4.out.bias"):
        assert k in d, k
    assert "b8.fromrgb.weight" not in d and "b16.skip.bias" not in d
    assert G.synthesis.b8.conv0.affine.bias.eq(1).all()  # styles start at 1


def test_equalised_lr_scaling():
    torch.manual_seed(0)
    fc = N.FullyConnectedLayer(256, 64, lr_multiplier=0.01)
    # stored weights are N(0, 1) / lr_multiplier; the run-time gain restores He init
    assert fc.weight.std().item() == pytest.approx(100, rel=0.05)
    assert fc.weight_gain == pytest.approx(0.01 / 16)
    x = torch.randn(4096, 256)
    assert fc(x).std().item() == pytest.approx(1.0, rel=0.05)
    conv = N.Conv2dLayer(64, 32, 3)
    assert conv.weight.std().item() == pytest.approx(1.0, rel=0.05)
    y = conv(torch.randn(8, 64, 16, 16))
    assert y[:, :, 1:-1, 1:-1].std().item() == pytest.approx(1.0, rel=0.1)


def test_demodulation_normalises():
    torch.manual_seed(0)
    w = torch.randn(32, 16, 3, 3)
    x = torch.randn(8, 16, 16, 16)
    for scale in (0.01, 1.0, 100.0):
        styles = torch.rand(8, 16) * scale + 0.1
        y = N.modulated_conv2d(x, w, styles, demodulate=True)
        # unit-norm weights on unit-variance inputs: output variance ~1 whatever the styles
        assert y[:, :, 2:-2, 2:-2].std().item() == pytest.approx(1.0, rel=0.15)
    y1 = N.modulated_conv2d(x, w, torch.ones(8, 16), demodulate=True)
    y2 = N.modulated_conv2d(x, w * 7, torch.ones(8, 16) * 3, demodulate=True)
    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)


def _reference_up(x, w, f):
    """Transposed conv (stride 2), pad 1, FIR filter with gain 4: the published arrangement."""
    out = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
    return N._fir(out, f, (1, 1, 1, 1), gain=4.0)


@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_folded_paths_equal_the_reference_arithmetic(demodulate):
    torch.manual_seed(0)
    f = N.fir_filter().double()
    x = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    w = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    s = torch.randn(3, 5, dtype=torch.float64)
    ref = []
    for i in range(3):
        wi = w * s[i].reshape(1, 5, 1, 1)
        if demodulate:
            wi = wi * (wi.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        ref.append(_reference_up(x[i:i + 1], wi, f)[0])
    ref = torch.stack(ref)
    for fused in (True, False):
        y = N.modulated_conv2d(x, w, s, demodulate=demodulate, up=True, resample_filter=f,
                               fused=fused)
        torch.testing.assert_close(y, ref, rtol=0, atol=1e-10)
    # downsampling conv: FIR (pad 2) then 3x3 stride 2; 1x1 skip: FIR (pad 1), every 2nd pixel
    conv = N.Conv2dLayer(5, 7, 3, down=2).double()
    want = F.conv2d(N._fir(x, f, (2, 2, 2, 2)), conv.weight * conv.weight_gain, stride=2)
    torch.testing.assert_close(conv(x), want + conv.bias.reshape(1, -1, 1, 1), rtol=0, atol=1e-10)
    skip = N.Conv2dLayer(5, 7, 1, bias=False, down=2).double()
    want = F.conv2d(N.downsample2d(x, f), skip.weight * skip.weight_gain)
    torch.testing.assert_close(skip(x), want, rtol=0, atol=1e-10)


def test_upsample_keeps_constant_images_constant():
    f = N.fir_filter()
    x = torch.ones(1, 3, 8, 8)
    up = N.upsample2d(x, f)
    assert up.shape == (1, 3, 16, 16)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.ones(1, 3, 12, 12))


def test_minibatch_std_groups_are_strided():
    layer = N.MinibatchStdLayer(group_size=2)
    x = torch.zeros(4, 2, 1, 1)
    x[0], x[2] = 1.0, 3.0  # group {0, 2} (strided split), group {1, 3} is constant
    y = layer(x)
    assert y.shape == (4, 3, 1, 1)
    assert y[0, 2].item() == pytest.approx(1.0, abs=1e-3) and y[2, 2].item() == pytest.approx(1.0, abs=1e-3)
    assert y[1, 2].item() == pytest.approx(0.0, abs=1e-3)


def test_truncation_pulls_towards_average_w():
    torch.manual_seed(0)
    G, _ = _tiny(16)
    G.mapping.w_avg.normal_()
    z = torch.randn(4, 16)
    w1 = G.mapping(z, update_w_avg=False)
    w0 = G.mapping(z, truncation_psi=0.0, update_w_avg=False)
    torch.testing.assert_close(w0, G.mapping.w_avg.expand_as(w0))
    wh = G.mapping(z, truncation_psi=0.5, update_w_avg=False)
    torch.testing.assert_close(wh, (w0 + w1) / 2)


def _ref_fir(x, pad):
    """[1, 3, 3, 1] low-pass (outer product, normalised to 1), zero padding, depthwise."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype)
    k = torch.outer(k, k) / 64
    c = x.shape[1]
    return F.conv2d(F.pad(x, [pad] * 4), k.expand(c, 1, 4, 4), groups=c)


def _ref_discriminator(D, img):
    """StyleGAN2's residual D from the published arithmetic (Karras et al. 2020, fig. 7 and
    appendix): equalised-lr weights w / sqrt(fan_in); lrelu(0.2) * sqrt(2); downsampling =
    [1,3,3,1] FIR, then a stride-2 conv (3x3: FIR padded by 2; 1x1 skip: FIR padded by 1 and
    every second pixel); residual branches summed with sqrt(1/2) each; minibatch std over groups
    of min(4, N) images strided across the batch; 3x3 conv, FC, FC to one logit."""
    def conv(layer, x, act=True, gain=1.0, down=False):
        w = layer.weight / math.sqrt(layer.weight[0].numel())
        k = w.shape[-1]
        if down and k == 3:
            x = F.conv2d(_ref_fir(x, 2), w, stride=2)
        elif down:
            x = F.conv2d(_ref_fir(x, 1)[:, :, ::2, ::2], w)
        else:
            x = F.conv2d(x, w, padding=k // 2)
        if layer.bias is not None:
            x = x + layer.bias.reshape(1, -1, 1, 1)
        return (F.leaky_relu(x, 0.2) * math.sqrt(2) if act else x) * gain

    def fc(layer, x, act):
        x = x @ (layer.weight / math.sqrt(layer.weight.shape[1])).t() + layer.bias
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if act else x

    x = None
    for res in D.block_resolutions:
        b = getattr(D, f"b{res}")
        if x is None:
            x = conv(b.fromrgb, img)
        y = conv(b.skip, x, act=False, gain=math.sqrt(0.5), down=True)
        x = conv(b.conv1, conv(b.conv0, x), gain=math.sqrt(0.5), down=True) + y
    n, c, h, w = x.shape
    g = min(4, n)
    grouped = x.reshape(g, n // g, c, h, w)  # image i is in group i mod (n / g)
    std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # [n / g]
    x = torch.cat([x, std.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)], dim=1)
    x = conv(D.b4.conv, x)
    return fc(D.b4.out, fc(D.b4.fc, x.flatten(1), True), False)


def test_discriminator_equals_the_published_arithmetic():
    torch.manual_seed(0)
    D = N.Discriminator(img_resolution=32, channel_base=256, channel_max=16).double()
    with torch.no_grad():
        for name, prm in D.named_parameters():
            if name.endswith("bias"):
                prm.normal_(0, 0.3)  # non-zero biases, so each is checked
    img = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(D(img), _ref_discriminator(D, img), rtol=0, atol=1e-9)
