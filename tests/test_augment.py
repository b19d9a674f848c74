"""Augmentation pipe and ADA controller: identity at p=0, every op at p=1, gradients, borders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spidergan import cli, env
from spidergan.gan.augment import (
    ALL_OPS, AUGPIPES, GROUPS, AdaController, AugmentPipe, preview_grid,
    resolve_ops,
)

env.setup()
torch.set_num_threads(1)


def _images(n=16, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g) * 2 - 1


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- pipe
def test_augpipes_name_the_issue_groups():
    assert resolve_ops("blit") == ("xflip", "rotate90", "xint")
    assert resolve_ops("geom") == ("scale", "rotate", "aniso", "xfrac")
    assert resolve_ops("color") == ("brightness", "contrast", "lumaflip", "hue", "saturation")
    assert resolve_ops("cutout") == ("cutout",)
    assert resolve_ops("bgc") == GROUPS["blit"] + GROUPS["geom"] + GROUPS["color"]
    assert resolve_ops("bgcc") == ALL_OPS
    assert resolve_ops("xfrac+blit") == ("xflip", "rotate90", "xint", "xfrac")
    assert set(AUGPIPES) >= {"blit", "geom", "color", "cutout", "bg", "bgc", "bgcc"}
    with pytest.raises(ValueError, match="unknown augpipe"):
        AugmentPipe("bgx")
    with pytest.raises(TypeError, match="unknown augmentation strength"):
        AugmentPipe("bgc", hue_maxx=1.0)


@pytest.mark.parametrize("augpipe", ["blit", "geom", "color", "cutout", "bgcc"])
def test_p0_is_bit_exact_identity(augpipe):
    x = _images()
    x.requires_grad_(True)
    pipe = AugmentPipe(augpipe, p=0.0)
    y = pipe(x, generator=_gen())
    assert torch.equal(y, x)
    y.sum().backward()  # still the graph's identity: gradient 1 everywhere
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("op", ALL_OPS)
def test_p1_fires_every_op_alone_changes_images_and_passes_gradients(op):
    x = _images(n=16).requires_grad_(True)
    pipe = AugmentPipe(op, p=1.0)
    pipe.record = True
    y = pipe(x, generator=_gen(2))
    assert y.shape == x.shape
    assert set(k for k in pipe.last if k in ALL_OPS) == {op}
    assert bool(pipe.last[op].all()), f"{op} did not fire on every image at p=1"
    changed = (y - x).detach().abs().flatten(1).amax(1) > 1e-3
    # xflip/lumaflip pick "flip or not" and rotate90 one of four turns (the identity included)
    # at random, so they leave a share of images as they are even when they fire
    need = 4 if op in ("xflip", "rotate90", "lumaflip") else 15
    assert int(changed.sum()) >= need, f"{op} changed only {int(changed.sum())}/16 images"
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("augpipe", ["blit", "geom", "color", "cutout", "bgcc"])
def test_group_at_p1_fires_all_its_ops_and_gradients_reach_input(augpipe):
    x = _images(n=8).requires_grad_(True)
    pipe = AugmentPipe(augpipe, p=1.0)
    pipe.record = True
    y = pipe(x, generator=_gen(3))
    for op in resolve_ops(augpipe):
        assert bool(pipe.last[op].all()), op
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(y).all()


def test_probability_is_per_image_and_per_op():
    x = _images(n=400, h=8, w=8)
    pipe = AugmentPipe("bgcc", p=0.3)
    pipe.record = True
    pipe(x, generator=_gen(4))
    for op in ALL_OPS:
        rate = pipe.last[op].float().mean().item()
        # rotation is drawn twice with 1 - sqrt(1 - p) each: "some rotation" has probability p
        assert abs(rate - 0.3) < 0.08, (op, rate)
    # independent ops: co-firing close to p^2, not p
    both = (pipe.last["xint"] & pipe.last["hue"]).float().mean().item()
    assert abs(both - 0.09) < 0.05


def test_blit_is_lossless_permutation_of_pixels():
    # channel 0/1 hold the column/row index: after blit every pixel must still hold integers
    h = w = 16
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    x = torch.stack([xx, yy, xx * 0], 0).expand(32, 3, h, w).clone()
    y = AugmentPipe("blit", p=1.0)(x, generator=_gen(5))
    assert (y - y.round()).abs().max() < 1e-4
    assert not torch.equal(y, x)


def test_translation_never_wraps_the_left_border_onto_the_right():
    # black image, white 4-px stripe on the left border; translate horizontally by up to
    # 0.25 W (integer) plus a small fractional shift. Reflection keeps the stripe within the
    # left part; a wrap-around (roll) would put it next to the right border after a left shift.
    n, h, w = 64, 16, 64
    x = -torch.ones(n, 3, h, w)
    x[..., :4] = 1.0
    pipe = AugmentPipe("xint+xfrac", p=1.0, xint_max=0.25, xfrac_std=0.03)
    pipe.record = True
    y = pipe(x, generator=_gen(6))
    inv = pipe.last["geom_inverse"]
    shift_x = -inv[:, 0, 2]  # forward translation in pixels
    assert shift_x.max() > 8 and shift_x.min() < -8, "test needs both directions"
    right = y[..., 40:]
    assert right.max() < -0.99, "content from the left border appeared on the right"
    # left shifts really moved the stripe out (the left border now mirrors black content)
    left_moved = shift_x < -6
    assert (y[left_moved][..., :1] < -0.9).all()
    # and the check would catch a wrapping implementation
    rolled = torch.stack([torch.roll(x[i], int(round(float(shift_x[i]))), dims=-1) for i in range(n)])
    assert rolled[..., 40:].max() > 0.9


def test_geometric_resampling_equals_explicit_mirror_padding():
    # all geometric ops at p=1 with strong strengths: the output must equal sampling the image
    # explicitly padded by mirroring (numpy "symmetric"), i.e. content outside the image comes
    # from its mirror image, never from the opposite border
    n, h, w = 12, 24, 24
    x = _images(n=n, h=h, w=w, seed=7)
    pipe = AugmentPipe("bg", p=1.0, scale_std=0.5, xfrac_std=0.3)
    pipe.record = True
    y = pipe(x, generator=_gen(8))
    inv = pipe.last["geom_inverse"]
    pad = 2 * w
    xp = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="symmetric"))
    H, W = h + 2 * pad, w + 2 * pad
    # same inverse map in pixel coordinates of the padded image, sampled with zeros padding:
    # any sample landing outside the mirror-padded canvas would show up as an error
    d = torch.tensor([w / 2, h / 2, 1.0])
    D = torch.tensor([W / 2, H / 2, 1.0])
    theta = (inv * d[None, None, :] / D[None, :, None])[:, :2, :]
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    ref = F.grid_sample(xp, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert (grid.abs() < 1).all(), "reference canvas too small for this draw"
    assert torch.allclose(y, ref, atol=1e-4)


def test_colour_transform_is_affine_and_keeps_grey_axis_for_hue_and_saturation():
    g = torch.linspace(-1, 1, 16)
    grey = g.view(1, 1, 4, 4).expand(8, 3, 4, 4).clone()
    y = AugmentPipe("hue+saturation", p=1.0)(grey, generator=_gen(9))
    assert torch.allclose(y, grey, atol=1e-5)  # rotation/scaling about the luma axis fixes greys
    x = _images(n=8, h=4, w=4)
    pipe = AugmentPipe("color", p=1.0)
    pipe.record = True
    y = pipe(x, generator=_gen(10))
    m = pipe.last["color_matrix"]
    ref = torch.einsum("nij,njhw->nihw", m[:, :3, :3], x) + m[:, :3, 3, None, None]
    assert torch.allclose(y, ref, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        pipe(torch.zeros(2, 1, 4, 4))


def test_cutout_zeroes_a_half_size_square():
    x = torch.ones(8, 3, 32, 32)
    pipe = AugmentPipe("cutout", p=1.0)
    pipe.record = True
    y = pipe(x, generator=_gen(11))
    cut = (y == 0).all(1)
    for i in range(8):
        rows, cols = cut[i].any(1).sum(), cut[i].any(0).sum()
        assert 1 <= rows <= 16 and 1 <= cols <= 16
        cy, cx = pipe.last["cutout_centre"][i, 1], pipe.last["cutout_centre"][i, 0]
        if 0.25 < cx < 0.75 and 0.25 < cy < 0.75:  # fully inside: exactly half the side
            assert rows == 16 and cols == 16
    assert (y[~cut.unsqueeze(1).expand_as(y)] == 1).all()


def test_p_is_a_buffer_saved_with_state_dict():
    pipe = AugmentPipe("bgc", p=0.25)
    assert "p" in dict(pipe.named_buffers())
    sd = pipe.state_dict()
    other = AugmentPipe("bgc")
    other.load_state_dict(sd)
    assert float(other.p) == pytest.approx(0.25)
    assert other.p.ndim == 0 and other.p.dtype == torch.float32


# --------------------------------------------------------------------------- controller
def test_controller_raises_p_when_d_is_overconfident_and_lowers_otherwise():
    pipe = AugmentPipe("bgc", p=0.5)
    ctrl = AdaController(target=0.6, ada_kimg=500, interval=4)
    step = 32 * 4 / (500 * 1000)
    assert ctrl.step_size(32) == step
    for i in range(3):
        ctrl.accumulate(torch.full((32, 1), 2.0))
        assert ctrl.step(pipe, 32, i) is None  # only every 4th step
    ctrl.accumulate(torch.full((32, 1), 2.0))
    out = ctrl.step(pipe, 32, 3)
    assert out == {"p": pytest.approx(0.5 + step, abs=1e-7), "rt": 1.0}
    assert float(ctrl.stats_tensor()[1]) == 0  # reset
    # r_t = 0.25 < 0.6: p goes down by exactly one step
    before = float(pipe.p)
    for i in range(4, 8):
        ctrl.accumulate(torch.tensor([1.0, -1.0, -3.0, -0.5] * 8))
    out = ctrl.step(pipe, 32, 7)
    assert out["rt"] == pytest.approx(-0.5)
    assert float(pipe.p) == pytest.approx(before - step, abs=1e-7)
    # exactly at the target: no move
    before = float(pipe.p)
    ctrl.accumulate(torch.tensor([1.0] * 8 + [-1.0] * 2))  # mean sign = 0.6
    ctrl.step(pipe, 32, 11)
    assert float(pipe.p) == before


def test_controller_clamps_to_unit_interval():
    ctrl = AdaController(target=0.6, ada_kimg=0.001, interval=1)  # huge steps
    pipe = AugmentPipe("bgc", p=0.5)
    ctrl.accumulate(torch.ones(8))
    assert ctrl.step(pipe, 64, 0)["p"] == 1.0
    ctrl.accumulate(-torch.ones(8))
    assert ctrl.step(pipe, 64, 1)["p"] == 0.0
    ctrl.accumulate(-torch.ones(8))
    assert ctrl.step(pipe, 64, 2)["p"] == 0.0


def test_controller_stats_allow_in_place_all_reduce_and_round_trip():
    a, b = AdaController(interval=2), AdaController(interval=2)
    a.accumulate(torch.ones(10))
    b.accumulate(-torch.ones(30))
    # what dist.all_reduce(SUM) does in place on every rank
    a.stats_tensor().add_(b.stats_tensor())
    assert a.stats_tensor().tolist() == [-20.0, 40.0]
    state = a.state_dict()
    c = AdaController(target=0.1, ada_kimg=7, interval=9)
    c.load_state_dict(state)
    assert (c.target, c.ada_kimg, c.interval) == (0.6, 500.0, 2)
    pipe = AugmentPipe("blit", p=0.5)
    out = c.step(pipe, 16, 1)
    assert out["rt"] == pytest.approx(-0.5)
    assert out["p"] == pytest.approx(0.5 - 16 * 2 / 500_000, abs=1e-7)
    # a checkpoint taken with torch.save loads with weights_only=True
    import io

    buf = io.BytesIO()
    torch.save({"ada": a.state_dict(), "pipe": pipe.state_dict()}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    AdaController().load_state_dict(loaded["ada"])


# --------------------------------------------------------------------------- preview + CLI
def test_preview_grid_rows_are_original_then_each_distinct_p():
    x = _images(n=3, h=16, w=16)
    im = preview_grid(x, "bgc", [0.2, 0.5, 0.5, 0.0], seed=0)
    assert im.size[1] == 3 * (16 + 2)  # original, 0.2, 0.5
    arr = np.asarray(im)
    # first row shows the originals unchanged
    first = arr[:16, 72:72 + 16].astype(float) / 127.5 - 1
    assert np.abs(first - x[0].permute(1, 2, 0).numpy()).max() < 0.01


def test_augment_preview_command(tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 30), (24, 24), (30, 50)]):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(src / f"{i}.png")
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "prev.png"
    rc = cli.main(["augment-preview", "--p", "0.3", "--images", str(src), "--count", "3",
                   "--resolution", "16", "--augpipe", "bgcc", "--out", str(out)])
    assert rc == 0
    im = Image.open(out)
    assert im.size == (72 + 3 * 18, 5 * 18)  # original, 0.2, 0.5, 0.8, 0.3
    assert "0.3" in capsys.readouterr().out
    rc = cli.main(["augment-preview", "--images", str(tmp_path / "nothing"), "--out", str(out)])
    assert rc == 2


@pytest.mark.parametrize("filt", ["bilinear", "antialias"])
def test_forward_backward_and_accumulate_never_read_tensor_values_on_the_host(filt):
    # a meta tensor has no data: any .item()/float()/bool() or data-dependent Python branch
    # raises, so running the training-time path on meta proves it never syncs with the host
    pipe = AugmentPipe("bgcc", p=0.5, filter=filt).to("meta")
    x = torch.empty(4, 3, 16, 16, device="meta", requires_grad=True)
    y = pipe(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape
    ctrl = AdaController()
    ctrl.accumulate(torch.empty(4, 1, device="meta"))
    assert ctrl.stats_tensor().device.type == "meta"


# --------------------------------------------------------------------------- parameter distributions
# The ADA paper's settings (Karras et al. 2020, appendix B.2), written here, not read from
# the code: each op alone at p = 1 on N images, the sampled parameters recovered from the
# recorded matrices, their moments compared with the paper's distributions.
N_STAT = 4096
RES = 32


def _record(op, p=1.0, n=N_STAT, seed=5):
    pipe = AugmentPipe(op, p=p)
    pipe.record = True
    with torch.no_grad():
        pipe(torch.zeros(n, 3, RES, RES), generator=_gen(seed))
    return pipe.last


def _moments(v, mean, std, tol=0.05):
    v = v.double()
    assert float(v.mean()) == pytest.approx(mean, abs=4 * std / math.sqrt(len(v)) + 1e-12)
    assert float(v.std()) == pytest.approx(std, rel=tol)


def test_xflip_and_quarter_turns_are_uniform_over_their_choices():
    inv = _record("xflip")["geom_inverse"]
    assert set(inv[:, 0, 0].tolist()) == {-1.0, 1.0} and float(inv[:, 0, 0].mean()) == pytest.approx(0, abs=0.05)
    inv = _record("rotate90")["geom_inverse"]
    k = torch.round(torch.atan2(inv[:, 1, 0], inv[:, 0, 0]) / (math.pi / 2)) % 4
    counts = torch.bincount(k.long(), minlength=4).double() / N_STAT
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.float64), atol=0.03)


def test_integer_translation_is_uniform_within_an_eighth_of_the_image_and_rounded():
    inv = _record("xint")["geom_inverse"]
    t = -inv[:, :2, 2]  # pixels
    assert torch.equal(t, torch.round(t)) and float(t.abs().max()) <= 0.125 * RES
    # U(-0.125, 0.125) * 32 rounded: variance 4^2 / 3 + 1/12
    _moments(t[:, 0], 0.0, math.sqrt(16 / 3 + 1 / 12))
    _moments(t[:, 1], 0.0, math.sqrt(16 / 3 + 1 / 12))


def test_isotropic_scale_is_lognormal_with_std_0_2_in_log2():
    inv = _record("scale")["geom_inverse"]
    assert torch.allclose(inv[:, 0, 0], inv[:, 1, 1])
    _moments(-torch.log2(inv[:, 0, 0]), 0.0, 0.2)


def test_anisotropic_scale_keeps_area_and_is_lognormal_with_std_0_2():
    inv = _record("aniso")["geom_inverse"]
    assert torch.allclose(inv[:, 0, 0] * inv[:, 1, 1], torch.ones(N_STAT), atol=1e-5)
    _moments(torch.log2(inv[:, 1, 1]), 0.0, 0.2)


def test_fractional_translation_is_normal_with_std_an_eighth_of_the_image():
    inv = _record("xfrac")["geom_inverse"]
    _moments(-inv[:, 0, 2] / RES, 0.0, 0.125)
    _moments(-inv[:, 1, 2] / RES, 0.0, 0.125)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_rotation_happens_with_probability_p_and_uniform_angle(p):
    inv = _record("rotate", p=p)["geom_inverse"]
    angle = torch.atan2(inv[:, 1, 0], inv[:, 0, 0])
    rotated = angle.abs() > 1e-6
    assert float(rotated.double().mean()) == pytest.approx(p, abs=0.03)
    # one or two uniform(-pi, pi) rotations: the total angle is uniform on the circle
    inv = _record("rotate", p=1.0)["geom_inverse"]
    angle = torch.atan2(inv[:, 1, 0], inv[:, 0, 0]).double()
    assert float(torch.cos(angle).mean()) == pytest.approx(0, abs=0.05)
    assert float(torch.cos(angle).square().mean()) == pytest.approx(0.5, abs=0.03)


_LUMA_V = torch.full((3,), 1 / math.sqrt(3.0))
_ORTHO = torch.tensor([1.0, -1.0, 0.0]) / math.sqrt(2.0)  # a colour direction orthogonal to luma


def test_brightness_adds_normal_offsets_with_std_0_2():
    m = _record("brightness")["color_matrix"]
    assert torch.allclose(m[:, :3, :3], torch.eye(3).expand(N_STAT, 3, 3))
    assert torch.allclose(m[:, 0, 3], m[:, 2, 3])
    _moments(m[:, 0, 3], 0.0, 0.2)


def test_contrast_is_lognormal_with_std_0_5_in_log2():
    m = _record("contrast")["color_matrix"]
    c = m[:, 0, 0]
    assert torch.allclose(m[:, :3, :3], c[:, None, None] * torch.eye(3), atol=1e-6)
    _moments(torch.log2(c), 0.0, 0.5)


def test_luma_flip_reflects_half_the_images_about_the_plane_normal_to_luma():
    m = _record("lumaflip")["color_matrix"][:, :3, :3]
    reflect = torch.eye(3) - 2 * torch.outer(_LUMA_V, _LUMA_V)
    is_ref = torch.isclose(m, reflect.expand_as(m), atol=1e-6).flatten(1).all(1)
    is_id = torch.isclose(m, torch.eye(3).expand_as(m), atol=1e-6).flatten(1).all(1)
    assert bool((is_ref | is_id).all())
    assert float(is_ref.double().mean()) == pytest.approx(0.5, abs=0.03)


def test_hue_rotates_about_luma_by_a_uniform_angle():
    m = _record("hue")["color_matrix"][:, :3, :3].double()
    assert torch.allclose(m @ _LUMA_V.double(), _LUMA_V.double().expand(N_STAT, 3), atol=1e-5)
    cos = (m.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2  # trace of a 3-D rotation = 1 + 2 cos
    assert float(cos.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(cos.square().mean()) == pytest.approx(0.5, abs=0.03)  # uniform in (-pi, pi]


def test_saturation_scales_chroma_lognormally_with_std_1_in_log2():
    m = _record("saturation")["color_matrix"][:, :3, :3]
    assert torch.allclose(m @ _LUMA_V, _LUMA_V.expand(N_STAT, 3), atol=1e-5)
    s = m @ _ORTHO  # = sat * _ORTHO
    assert torch.allclose(s, (s @ _ORTHO)[:, None] * _ORTHO, atol=1e-5)
    _moments(torch.log2(s @ _ORTHO), 0.0, 1.0)


# --------------------------------------------------------------------------- precision, resampling
def test_geometry_under_bf16_autocast_equals_float32():
    from spidergan.gan import warp

    x = _images(n=8, h=64, w=64)
    pipe = AugmentPipe("bg", p=1.0)
    pipe.record = True
    ref = pipe(x, generator=_gen(3))
    theta_ref = pipe.last["geom_theta"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pipe(x, generator=_gen(3))
        grid_bf = warp.sampling_grid(theta_ref, (8, 3, 512, 512))
        flip = AugmentPipe("xflip", p=1.0)(x.bfloat16(), generator=_gen(4))
    assert torch.equal(pipe.last["geom_theta"], theta_ref)
    assert torch.equal(out, ref)
    assert torch.equal(grid_bf, warp.sampling_grid(theta_ref, (8, 3, 512, 512)))
    flipped = AugmentPipe("xflip", p=1.0)
    flipped.record = True
    flipped(x, generator=_gen(4))
    want = torch.where(flipped.last["geom_inverse"][:, 0, 0, None, None, None] < 0,
                       x.bfloat16().flip(-1), x.bfloat16())
    # x-flips land on pixel centres (float32 sampling error ~1e-6, far below bf16's 4e-3 step)
    torch.testing.assert_close(flip.float(), want.float(), atol=1e-5, rtol=0)


def test_symlet6_taps_are_the_published_orthogonal_filter():
    from spidergan.gan.warp import SYM6

    h = torch.tensor(SYM6, dtype=torch.float64)
    assert float(h.sum()) == pytest.approx(math.sqrt(2), abs=1e-12)
    for m in range(1, 6):  # orthogonal to its own even shifts
        assert float((h[:-2 * m] * h[2 * m:]).sum()) == pytest.approx(0, abs=1e-12)
    assert float(h.square().sum()) == pytest.approx(1, abs=1e-12)
    # its wavelet g[k] = (-1)^k h[11 - k] has 6 vanishing moments (what "sym6" means)
    k = torch.arange(12, dtype=torch.float64)
    g = (-1) ** k * h.flip(0)
    for j in range(6):
        assert float((g * (k - 5.5) ** j).sum()) == pytest.approx(0, abs=1e-8 * 6.5 ** j)


def _quadrants(res=32):
    yy, xx = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    q = (((yy // (res // 2)) + (xx // (res // 2))) % 2).float() * 2 - 1
    return q[None, None].expand(1, 3, res, res).contiguous()


def _gradient_energy(x):
    """Mean squared horizontal plus mean squared vertical finite difference."""
    return float((x[..., :, 1:] - x[..., :, :-1]).square().mean()
                 + (x[..., 1:, :] - x[..., :-1, :]).square().mean())


def _shifted(x, dx, dy, filt):
    from spidergan.gan import warp

    n, _, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, -2 * dx / w], [0.0, 1.0, -2 * dy / h]]).expand(n, 2, 3)
    return warp.warp(x, theta, filt)


def test_antialiased_resampling_keeps_an_edge_sharp_after_a_half_pixel_shift():
    # the review's measure: a 32 px four-quadrant image in [-1, 1], shifted by (0.5, 0.5) px;
    # its figures: 0.260 before, 0.126 after bilinear, 0.204 after the reference's 2x path
    x = _quadrants()
    assert _gradient_energy(x) == pytest.approx(0.260, rel=0.02)
    assert _gradient_energy(_shifted(x, 0.5, 0.5, "bilinear")) == pytest.approx(0.126, rel=0.03)
    assert _gradient_energy(_shifted(x, 0.5, 0.5, "antialias")) == pytest.approx(0.204, rel=0.10)


def test_antialiased_resampling_is_the_identity_and_rotates_about_the_centre():
    g = torch.Generator().manual_seed(0)
    x = F.avg_pool2d(torch.randn(2, 3, 40, 40, generator=g), 9, 1)[:, :, :32, :32] * 3
    x = F.avg_pool2d(x, 5, 1, 2, count_include_pad=False)  # smooth: little to alias
    ident = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    quarter = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]).expand(2, 2, 3)
    from spidergan.gan import warp

    inner = (..., slice(6, -6), slice(6, -6))
    torch.testing.assert_close(warp.warp(x, ident, "antialias")[inner], x[inner], atol=1e-5, rtol=0)
    assert torch.equal(warp.warp(x, quarter, "bilinear"), torch.rot90(x, 1, (2, 3)))
    err = (warp.warp(x, quarter, "antialias") - torch.rot90(x, 1, (2, 3)))[inner].abs().max()
    assert float(err) < 0.03 * float(x.abs().max())


def test_pipe_uses_the_chosen_filter():
    x = _images(n=4)
    a = AugmentPipe("xfrac", p=1.0, filter="antialias")(x, generator=_gen(2))
    b = AugmentPipe("xfrac", p=1.0, filter="bilinear")(x, generator=_gen(2))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="unknown augment filter"):
        AugmentPipe("bgc", filter="bicubic")
