"""Importing NVIDIA's published StyleGAN2 pickles: restricted loading (nothing from the file
runs), complete parameter mapping, image fidelity, transfer learning from the result.

The pickles are built here in the layout of the published files, from our own networks:
stylegan2-ada-pytorch (a dict of `torch_utils.persistence._reconstruct_persistent_obj(meta)`
records with the module source, `_parameters`/`_buffers`/`_modules` OrderedDicts, init kwargs
as `dnnlib.util.EasyDict`, numpy scalar attributes, tensors pickled through
`torch._utils._rebuild_parameter`/`_rebuild_tensor_v2`/`torch.storage._load_from_bytes`), and
TF StyleGAN2 (a (G, D, Gs) tuple of `dnnlib.tflib.network.Network` states with numpy variables
under the TF names). The embedded "module source" writes a marker file if it is ever run.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spidergan import cli
from spidergan.gan import checkpoint, generate, nvidia_import, train
from spidergan.gan.networks import Discriminator, Generator
from gan_helpers import make_dataset, tiny

ARCH = dict(resolution=16, channel_base=128, channel_max=16, mapping_layers=2, z_dim=8, w_dim=8,
            mbstd_group=4)


# --------------------------------------------------------------------------- published layout
def _reconstruct_persistent_obj(meta):  # stand-in, only its module path matters when dumping
    raise AssertionError("never called")


class _EasyDict(dict):
    pass


class _TFNetwork:
    def __init__(self, state):
        self._state = state

    def __getstate__(self):
        return self._state


@contextlib.contextmanager
def _published_modules():
    """Make the published module paths resolvable while pickling, then remove them."""
    mods = {n: types.ModuleType(n) for n in ("torch_utils", "torch_utils.persistence", "dnnlib",
                                             "dnnlib.util", "dnnlib.tflib", "dnnlib.tflib.network")}
    for obj, mod, name in ((_reconstruct_persistent_obj, "torch_utils.persistence",
                            "_reconstruct_persistent_obj"),
                           (_EasyDict, "dnnlib.util", "EasyDict"),
                           (_TFNetwork, "dnnlib.tflib.network", "Network")):
        obj.__module__, obj.__qualname__ = mod, name
        setattr(mods[mod], name, obj)
    saved = {n: sys.modules.get(n) for n in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def _module_src(marker) -> str:
    return (f"import os\nopen({str(marker)!r}, 'w').write('module_src ran')\n"
            "class Generator: pass\n")


def _numpy1(payload: bytes) -> bytes:
    """The published files were written with numpy 1.x, whose module path is numpy.core
    (GLOBAL opcodes are newline-terminated text, so the path can be swapped in place)."""
    return payload.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


class _Persistent:
    """Pickles as the published persistent objects do: REDUCE of
    `torch_utils.persistence._reconstruct_persistent_obj` with the meta dict, no BUILD state."""

    def __init__(self, class_name, state, src):
        self.meta = dict(type="class", version=6, module_src=src, class_name=class_name,
                         state=state)

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


def _attrs(m: torch.nn.Module) -> dict:
    """Attributes NVIDIA's modules carry (numpy scalars where theirs are numpy scalars)."""
    name = type(m).__name__
    if name == "FullyConnectedLayer":
        return {"activation": m.activation, "weight_gain": np.float64(m.weight_gain),
                "bias_gain": m.bias_gain}
    if name == "Conv2dLayer":
        return {"activation": m.activation, "up": 1, "down": m.down, "conv_clamp": m.conv_clamp,
                "padding": m.padding, "weight_gain": np.float64(m.weight_gain),
                "act_gain": np.float64(math.sqrt(2) if m.activation == "lrelu" else 1.0)}
    if name == "SynthesisLayer":
        return {"resolution": m.resolution, "up": 2 if m.up else 1, "use_noise": m.use_noise,
                "activation": "lrelu", "conv_clamp": m.conv_clamp, "padding": 1,
                "act_gain": np.float64(math.sqrt(2))}
    if name == "ToRGBLayer":
        return {"conv_clamp": m.conv_clamp, "weight_gain": np.float64(m.weight_gain)}
    if name == "SynthesisBlock":
        return {"in_channels": m.in_channels, "resolution": m.resolution, "architecture": "skip",
                "use_fp16": False, "channels_last": False, "num_conv": m.num_conv,
                "num_torgb": m.num_torgb, "is_last": False}
    if name == "DiscriminatorBlock":
        return {"in_channels": m.in_channels, "resolution": m.resolution,
                "architecture": "resnet", "use_fp16": False, "channels_last": False}
    if name == "MinibatchStdLayer":
        return {"group_size": m.group_size, "num_channels": m.num_channels}
    if name == "MappingNetwork":
        return {"z_dim": m.z_dim, "c_dim": 0, "w_dim": m.w_dim, "num_ws": m.num_ws,
                "num_layers": m.num_layers, "w_avg_beta": m.w_avg_beta}
    return {}


def _published(m: torch.nn.Module, src: str, extra: dict | None = None) -> _Persistent:
    od = collections.OrderedDict
    state = {
        "training": False,
        "_parameters": od((k, None if v is None else
                           torch.nn.Parameter(v.detach().clone(), requires_grad=False))
                          for k, v in m._parameters.items()),
        "_buffers": od((k, v.detach().clone()) for k, v in m._buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": od(), "_forward_hooks": od(), "_forward_pre_hooks": od(),
        "_state_dict_hooks": od(), "_load_state_dict_pre_hooks": od(),
        "_modules": od((k, _published(c, src)) for k, c in m._modules.items()),
        "_init_args": (),
        **_attrs(m), **(extra or {}),
    }
    return _Persistent(type(m).__name__, state, src)


def _g_kwargs(G: Generator, channel_base, channel_max, clamp) -> dict:
    return _EasyDict(z_dim=G.z_dim, c_dim=0, w_dim=G.w_dim, img_resolution=G.img_resolution,
                     img_channels=3, mapping_kwargs=_EasyDict(num_layers=G.mapping.num_layers),
                     synthesis_kwargs=_EasyDict(channel_base=channel_base,
                                                channel_max=channel_max, num_fp16_res=4,
                                                conv_clamp=clamp))


def make_pytorch_pickle(path, G, D, G_ema, p, marker, channel_base, channel_max, clamp,
                        protocol=3):
    """stylegan2-ada-pytorch's `pickle.dump(snapshot_data, f)`: protocol 3 under Python 3.7,
    4 under 3.8+."""
    src = _module_src(marker)
    g_extra = {"z_dim": G.z_dim, "c_dim": 0, "w_dim": G.w_dim, "img_resolution": G.img_resolution,
               "img_channels": 3, "_init_kwargs": _g_kwargs(G, channel_base, channel_max, clamp)}
    d_extra = {"c_dim": 0, "img_resolution": D.img_resolution, "img_channels": 3,
               "_init_kwargs": _EasyDict(c_dim=0, img_resolution=D.img_resolution,
                                         img_channels=3, architecture="resnet",
                                         channel_base=channel_base, channel_max=channel_max,
                                         conv_clamp=clamp,
                                         epilogue_kwargs=_EasyDict(mbstd_group_size=4))}
    pipe = types.SimpleNamespace()
    pipe_rec = None
    if p is not None:
        pipe = torch.nn.Module()
        pipe.register_buffer("p", torch.tensor(p))
        pipe.register_buffer("Hz_geom", torch.randn(12))
        pipe_rec = _published(pipe, src, {"xflip": 1, "rotate90": 1, "brightness": 1,
                                          "brightness_std": np.float64(0.2)})
        pipe_rec.meta["class_name"] = "AugmentPipe"
    data = {"training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset",
                                    "path": "~/datasets/cats.zip", "resolution": G.img_resolution},
            "G": _published(G, src, g_extra), "D": _published(D, src, d_extra),
            "G_ema": _published(G_ema, src, g_extra), "augment_pipe": pipe_rec}
    with _published_modules():
        payload = pickle.dumps(data, protocol=protocol)
        path.write_bytes(_numpy1(payload) if protocol < 4 else payload)


def make_tf_pickle(path, G, D, G_ema, marker, protocol=4):
    """The original TF StyleGAN2 layout: (G, D, Gs) Network states with numpy variables
    (dnnlib saved them with pickle.HIGHEST_PROTOCOL, 4 under Python 3.6/3.7)."""
    src = _module_src(marker)

    def n(t):
        return t.detach().numpy().astype(np.float32)

    def conv(w, flip=False):  # ours [O, I, kh, kw] -> TF [kh, kw, I, O]
        a = n(w).transpose(2, 3, 1, 0)
        return a[::-1, ::-1].copy() if flip else a

    def g_vars(G):
        sd = G.state_dict()
        mapping = []
        for i in range(G.mapping.num_layers):
            mapping += [(f"Dense{i}/weight", n(sd[f"mapping.fc{i}.weight"]).T.copy()),
                        (f"Dense{i}/bias", n(sd[f"mapping.fc{i}.bias"]))]
        syn = [("4x4/Const/const", n(sd["synthesis.b4.const"])[None])]
        noise = {}

        def layer(ours, theirs, k, flip=False):
            syn.extend([(f"{theirs}/weight", conv(sd[f"{ours}.weight"], flip)),
                        (f"{theirs}/bias", n(sd[f"{ours}.bias"])),
                        (f"{theirs}/mod_weight", n(sd[f"{ours}.affine.weight"]).T.copy()),
                        (f"{theirs}/mod_bias", n(sd[f"{ours}.affine.bias"]) - 1),
                        (f"{theirs}/noise_strength", n(sd[f"{ours}.noise_strength"]))])
            noise[k] = n(sd[f"{ours}.noise_const"])[None, None]

        def torgb(r):
            o, t = f"synthesis.b{r}.torgb", f"{r}x{r}/ToRGB"
            syn.extend([(f"{t}/weight", conv(sd[f"{o}.weight"])), (f"{t}/bias", n(sd[f"{o}.bias"])),
                        (f"{t}/mod_weight", n(sd[f"{o}.affine.weight"]).T.copy()),
                        (f"{t}/mod_bias", n(sd[f"{o}.affine.bias"]) - 1)])

        layer("synthesis.b4.conv1", "4x4/Conv", 0)
        torgb(4)
        for lg in range(3, int(math.log2(G.img_resolution)) + 1):
            r = 2 ** lg
            layer(f"synthesis.b{r}.conv0", f"{r}x{r}/Conv0_up", 2 * lg - 5, flip=True)
            layer(f"synthesis.b{r}.conv1", f"{r}x{r}/Conv1", 2 * lg - 4)
            torgb(r)
        syn += [(f"noise{k}", v) for k, v in sorted(noise.items())]
        kw = _EasyDict(resolution=G.img_resolution, fmap_base=64, fmap_max=16, mapping_layers=2)
        net = lambda name, v, comps: _TFNetwork(  # noqa: E731
            {"version": 4, "name": name, "static_kwargs": kw, "build_module_src": src,
             "build_func_name": "G_main", "components": _EasyDict(comps), "variables": v})
        return net("G", [("dlatent_avg", n(sd["mapping.w_avg"]))],
                   {"mapping": net("G_mapping", mapping, {}),
                    "synthesis": net("G_synthesis", syn, {})})

    sd = D.state_dict()
    dv = []
    r0 = D.img_resolution
    dv += [(f"{r0}x{r0}/FromRGB/weight", conv(sd[f"b{r0}.fromrgb.weight"])),
           (f"{r0}x{r0}/FromRGB/bias", n(sd[f"b{r0}.fromrgb.bias"]))]
    for r in D.block_resolutions:
        for ours, theirs in (("conv0", "Conv0"), ("conv1", "Conv1_down")):
            dv += [(f"{r}x{r}/{theirs}/weight", conv(sd[f"b{r}.{ours}.weight"])),
                   (f"{r}x{r}/{theirs}/bias", n(sd[f"b{r}.{ours}.bias"]))]
        dv.append((f"{r}x{r}/Skip/weight", conv(sd[f"b{r}.skip.weight"])))
    dv += [("4x4/Conv/weight", conv(sd["b4.conv.weight"])), ("4x4/Conv/bias", n(sd["b4.conv.bias"])),
           ("4x4/Dense0/weight", n(sd["b4.fc.weight"]).T.copy()), ("4x4/Dense0/bias", n(sd["b4.fc.bias"])),
           ("Output/weight", n(sd["b4.out.weight"]).T.copy()), ("Output/bias", n(sd["b4.out.bias"]))]
    tf_D = _TFNetwork({"version": 4, "name": "D", "static_kwargs": _EasyDict(mbstd_group_size=4),
                       "build_module_src": src, "build_func_name": "D_stylegan2",
                       "components": _EasyDict(), "variables": dv})
    with _published_modules():
        payload = pickle.dumps((g_vars(G), tf_D, g_vars(G_ema)), protocol=protocol)
        path.write_bytes(_numpy1(payload) if protocol < 4 else payload)


# --------------------------------------------------------------------------- fixtures
def _randomised(seed, clamp=None):
    """Networks with every parameter and buffer non-trivial (noise strengths, biases, w_avg)."""
    torch.manual_seed(seed)
    G = Generator(z_dim=8, w_dim=8, img_resolution=16, mapping_layers=2, channel_base=128,
                  channel_max=16, conv_clamp=clamp).eval()
    D = Discriminator(img_resolution=16, channel_base=128, channel_max=16, conv_clamp=clamp).eval()
    with torch.no_grad():
        for name, prm in list(G.named_parameters()) + list(D.named_parameters()):
            if name.endswith("bias") or name.endswith("noise_strength"):
                prm.add_(torch.randn_like(prm) * 0.3)
        G.mapping.w_avg.copy_(torch.randn(8))
    return G, D


@pytest.fixture(scope="module")
def nets():
    G, D = _randomised(0, clamp=0.7)
    G_ema, _ = _randomised(1, clamp=0.7)
    return G, D, G_ema


def _images(G, seed=5, psi=0.7):
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, truncation_psi=psi, noise_mode="const")


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("protocol", [3, 4])
def test_pytorch_pickle_round_trip_is_exact_and_runs_nothing(nets, tmp_path, protocol):
    G, D, G_ema = nets
    marker = tmp_path / "pwned"
    pkl = tmp_path / "network-snapshot-000100.pkl"
    make_pytorch_pickle(pkl, G, D, G_ema, 0.25, marker, 128, 16, 0.7, protocol=protocol)
    if protocol == 3:
        assert b"cnumpy.core.multiarray\nscalar" in pkl.read_bytes()  # numpy scalar attributes
    out = tmp_path / "imported.pt"
    info = nvidia_import.import_checkpoint(pkl, out)
    assert not marker.exists()
    assert info["format"] == "stylegan2-ada-pytorch" and info["augment_p"] == pytest.approx(0.25)
    assert info["arch"] == {**ARCH, "conv_clamp": 0.7}

    state = checkpoint.load(out)  # weights_only
    for part, net in (("G", G), ("G_ema", G_ema), ("D", D)):
        ref = net.state_dict()
        assert set(state[part]) == set(ref)
        for k in ref:
            assert torch.equal(state[part][k], ref[k]), (part, k)
    assert float(state["augment_p"]) == pytest.approx(0.25)

    G2 = generate.load_generator(out)
    for psi in (1.0, 0.5):
        diff = (_images(G2, psi=psi) - _images(G_ema, psi=psi)).abs().max().item()
        assert diff < 1e-3, diff
    # the clamp came across: without it the same weights give other images
    G3 = Generator(z_dim=8, w_dim=8, img_resolution=16, mapping_layers=2, channel_base=128,
                   channel_max=16).eval()
    G3.load_state_dict(state["G_ema"])
    assert (_images(G3) - _images(G_ema)).abs().max() > 1e-2


@pytest.mark.parametrize("protocol", [3, 4])
def test_tf_pickle_round_trip(tmp_path, protocol):
    # TF StyleGAN2 has no conv clamp
    G, D = _randomised(2)
    G_ema, _ = _randomised(3)
    marker = tmp_path / "pwned"
    pkl = tmp_path / "stylegan2-tiny-config-f.pkl"
    make_tf_pickle(pkl, G, D, G_ema, marker, protocol=protocol)
    info = nvidia_import.import_checkpoint(pkl, tmp_path / "tf.pt")
    assert not marker.exists()
    assert info["format"] == "stylegan2-tf" and info["augment_p"] is None
    assert info["arch"] == {**ARCH, "conv_clamp": 0.0}
    state = checkpoint.load(tmp_path / "tf.pt")
    for part, net in (("G", G), ("G_ema", G_ema), ("D", D)):
        for k, v in net.state_dict().items():
            torch.testing.assert_close(state[part][k], v, rtol=0, atol=0, msg=f"{part}.{k}")
    diff = (_images(generate.load_generator(tmp_path / "tf.pt")) - _images(G_ema)).abs().max()
    assert diff < 1e-3


class _Exec:
    def __init__(self, marker):
        self.code = f"open({str(marker)!r}, 'w').write('ran')"

    def __reduce__(self):
        return builtins.exec, (self.code,)


class _System:
    def __init__(self, marker):
        self.cmd = f"touch {marker}"

    def __reduce__(self):
        import os
        return os.system, (self.cmd,)


@pytest.mark.parametrize("evil", [_Exec, _System])
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, evil):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"G": evil(marker)}, protocol=3)
    # the payload is live: a normal unpickling runs it
    pickle.loads(payload)  # noqa: S301 - deliberately, on our own harmless payload
    assert marker.exists()
    marker.unlink()
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(payload)
    with pytest.raises(nvidia_import.UnsafePickleError, match=r"refused to load global (builtins\.exec|posix\.system|os\.system)"):
        nvidia_import.import_checkpoint(pkl, tmp_path / "out.pt")
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
    assert cli.main(["import-checkpoint", str(pkl), str(tmp_path / "out.pt")]) == 1
    assert not marker.exists()


def test_code_hidden_inside_a_network_record_is_refused(nets, tmp_path):
    G, D, G_ema = nets
    marker = tmp_path / "pwned"
    pkl = tmp_path / "net.pkl"
    make_pytorch_pickle(pkl, G, D, G_ema, None, marker, 128, 16, 0.7)
    # swap one attribute for a code-running object
    data_G = _published(G, _module_src(marker), {"_init_kwargs": _EasyDict(x=_Exec(marker))})
    with _published_modules():
        pkl.write_bytes(pickle.dumps({"G": data_G, "D": _published(D, "")}, protocol=3))
    with pytest.raises(nvidia_import.UnsafePickleError, match="builtins.exec"):
        nvidia_import.safe_load(pkl)
    assert not marker.exists()


class _EvilStorage:
    """A storage record whose embedded torch.save blob would run code under plain torch.load."""

    def __init__(self, marker):
        import io

        buf = io.BytesIO()
        torch.save(_Exec(marker), buf, _use_new_zipfile_serialization=False)
        self.blob = buf.getvalue()

    def __reduce__(self):
        import torch.storage
        return torch.storage._load_from_bytes, (self.blob,)


def test_code_inside_a_tensor_storage_blob_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"G": _EvilStorage(marker)}, protocol=3))
    with pytest.raises(nvidia_import.UnsafePickleError, match="weights-only"):
        nvidia_import.safe_load(pkl)
    assert not marker.exists()


def test_mismatching_or_unsupported_networks_are_named(nets, tmp_path):
    G, D, G_ema = nets
    pkl = tmp_path / "net.pkl"
    make_pytorch_pickle(pkl, G, D, G_ema, None, tmp_path / "m", 128, 16, 0.7)
    data = nvidia_import.safe_load(pkl)
    del data["G_ema"].state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["torgb"]
    with pytest.raises(nvidia_import.NotImportable, match=r"G_ema .*missing .*synthesis\.b8\.torgb"):
        nvidia_import.convert(data)
    data = nvidia_import.safe_load(pkl)
    data["G"].state["c_dim"] = 10
    with pytest.raises(nvidia_import.NotImportable, match="conditional"):
        nvidia_import.convert(data)
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x03not a pickle at all")
    with pytest.raises(nvidia_import.NotImportable, match="not a readable network pickle"):
        nvidia_import.import_checkpoint(tmp_path / "junk.pkl", tmp_path / "o.pt")
    with pytest.raises(FileNotFoundError, match="docs/transfer.md"):
        nvidia_import.import_checkpoint(tmp_path / "absent.pkl", tmp_path / "o.pt")


def test_imported_checkpoint_resumes_training_with_freeze_d(nets, tmp_path, capsys):
    G, D, G_ema = nets
    pkl = tmp_path / "net.pkl"
    make_pytorch_pickle(pkl, G, D, G_ema, 0.1, tmp_path / "m", 128, 16, 0.7)
    src = tmp_path / "imported.pt"
    assert cli.main(["import-checkpoint", str(pkl), str(src)]) == 0
    printed = capsys.readouterr().out
    assert "-S train.channel_base=128" in printed and "-S train.conv_clamp=0.7" in printed
    ds = make_dataset(tmp_path / "data")
    out = tmp_path / "tl"
    p = tiny(kimg=0.008, snap_kimg=0.008, resume_from=str(src), freeze_d=3, conv_clamp=0.7)
    train.run(p, 0, dataset=ds, out=out, live_dir=None, metrics_path=None, progress=False)
    a, b = checkpoint.load(src), checkpoint.load(out / train.CHECKPOINT_NAME)
    for k in ("b16.fromrgb.weight", "b16.conv0.weight", "b16.conv1.weight", "b16.conv1.bias"):
        assert torch.equal(a["D"][k], b["D"][k]), k
    assert not torch.equal(a["D"]["b16.skip.weight"], b["D"]["b16.skip.weight"])
    assert not torch.equal(a["G"]["synthesis.b16.conv1.weight"], b["G"]["synthesis.b16.conv1.weight"])


# --------------------------------------------------------------------------- reference
def _ref_fir(x, f, pad, gain=1.0):
    """upfirdn2d without up/down: zero-pad (left, right, top, bottom), convolve with f * gain."""
    c = x.shape[1]
    x = F.pad(x, pad)
    return F.conv2d(x, (f * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


def _ref_generator(sd, z, psi, res, n_map, clamp):
    """G written out from the published arithmetic, one sample at a time: 2nd-moment z
    normalisation, lr-multiplied FC layers, w_avg.lerp(w, psi), modulated convs with
    demodulation (eps 1e-8), the 2x up conv as stride-2 transposed conv + [1,3,3,1] FIR
    (pad 1, gain 4), const noise * strength, bias, lrelu * sqrt(2), clamp, toRGB with styles
    * 1/sqrt(I) and no demodulation, image upsampling by zero insertion + FIR (pad 2,1, gain 4)."""
    g2 = math.sqrt(2)
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(n_map):
        w, b = sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"]
        x = F.leaky_relu(x @ (w * 0.01 / math.sqrt(w.shape[1])).t() + b * 0.01, 0.2) * g2
    w_lat = sd["mapping.w_avg"] + psi * (x - sd["mapping.w_avg"])
    f = sd["synthesis.b4.resample_filter"]
    imgs = []
    for n in range(z.shape[0]):
        wl = w_lat[n:n + 1]

        def styles(pre):
            a = sd[f"{pre}.affine.weight"]
            return (wl @ (a / math.sqrt(a.shape[1])).t() + sd[f"{pre}.affine.bias"])[0]

        def layer(h, pre, up):
            wt = sd[f"{pre}.weight"] * styles(pre)[None, :, None, None]
            wt = wt / (wt.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
            if up:
                h = F.conv_transpose2d(h, wt.transpose(0, 1), stride=2)
                h = _ref_fir(h, f, (1, 1, 1, 1), gain=4)
            else:
                h = F.conv2d(h, wt, padding=1)
            h = h + sd[f"{pre}.noise_const"] * sd[f"{pre}.noise_strength"]
            h = F.leaky_relu(h + sd[f"{pre}.bias"][None, :, None, None], 0.2) * g2
            return h.clamp(-clamp, clamp) if clamp else h

        def torgb(h, pre):
            wt = sd[f"{pre}.weight"]
            s = styles(pre) / math.sqrt(wt.shape[1])
            y = F.conv2d(h, wt * s[None, :, None, None]) + sd[f"{pre}.bias"][None, :, None, None]
            return y.clamp(-clamp, clamp) if clamp else y

        h = layer(sd["synthesis.b4.const"][None], "synthesis.b4.conv1", False)
        img = torgb(h, "synthesis.b4.torgb")
        r = 8
        while r <= res:
            h = layer(h, f"synthesis.b{r}.conv0", True)
            h = layer(h, f"synthesis.b{r}.conv1", False)
            up = torch.zeros(1, 3, r, r)
            up[:, :, ::2, ::2] = img
            img = _ref_fir(up, f, (2, 1, 2, 1), gain=4) + torgb(h, f"synthesis.b{r}.torgb")
            r *= 2
        imgs.append(img)
    return torch.cat(imgs)


@pytest.mark.parametrize("clamp", [None, 0.7])
def test_generator_matches_the_published_arithmetic(clamp):
    G, _ = _randomised(4, clamp=clamp)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(9))
    sd = {k: v.detach() for k, v in G.state_dict().items()}
    with torch.no_grad():
        ref = _ref_generator(sd, z, 0.6, 16, 2, clamp)
        ours = G(z, truncation_psi=0.6, noise_mode="const")
    diff = (ours - ref).abs().max().item()
    assert diff < 1e-4, diff
    assert ref.abs().max() > 0.1  # a real image, not a degenerate zero
