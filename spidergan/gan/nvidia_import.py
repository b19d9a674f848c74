"""Import NVIDIA's published StyleGAN2 network pickles as SpiderGAN checkpoints (transfer learning).

`spidergan import-checkpoint PKL OUT` turns a stylegan2-ada-pytorch network pickle (`G`, `D`,
`G_ema` and, when present, the augmentation probability `augment_pipe.p`) into the checkpoint
format `train.resume_from` loads (see checkpoint.py); `spidergan generate` reads it as well.

Safety: the pickle is read by `safe_pickle.safe_load` (a restricted unpickler that never runs
anything from the file; see safe_pickle.py).

Fidelity. Our networks (networks.py) follow the published modules name for name, so the
mapping is the identity on parameter and buffer names and shapes:

    published (stylegan2-ada-pytorch)                     ours
    G.mapping.fc{i}.weight [w, z|w] / .bias [w]           same (raw weights, lr multiplier 0.01
                                                          applied at run time, as there)
    G.mapping.w_avg [w]                                   same (truncation: w_avg.lerp(w, psi))
    G.synthesis.b4.const [C, 4, 4]                        same
    G.synthesis.b{r}.conv0.* (r > 4, up 2x)               same: affine.weight/.bias (bias
    G.synthesis.b{r}.conv1.*                              init 1), weight [O, I, 3, 3], bias,
                                                          noise_strength [], noise_const [r, r],
                                                          resample_filter [4, 4]
    G.synthesis.b{r}.torgb.affine.* / .weight / .bias     same (1x1, styles * 1/sqrt(I), no demod)
    G.synthesis.b{r}.resample_filter [4, 4]               same ([1,3,3,1] outer, sum 1; gain 4 up)
    D.b{r}.fromrgb / conv0 / conv1 (down) / skip (down)   same, with resample_filter buffers
    D.b4.conv / fc / out (minibatch std group size)       same (`train.mbstd_group`)

Non-parameter semantics are taken from the pickled attributes: `conv_clamp` (256 in NVIDIA's
configs: clamps conv outputs, scaled by the layer gain), the minibatch-std group size, the
mapping depth and the channel schedule (`channel_base`, `channel_max` from the Generator's init
kwargs, checked against every shape). Weight demodulation (eps 1e-8), the noise strength, the
lrelu gain sqrt(2) and the skip-architecture image upsampling are computed as in the
published networks (tests/test_nvidia_import.py checks them against a reference written from
the published arithmetic). The published networks ran their top resolutions in fp16 on GPUs;
ours compute in fp32, which is what the original gives with `force_fp32=True` or on CPU.

Not supported: conditional networks (`c_dim > 0`), other architectures than G 'skip' / D
'resnet', mapping lr multipliers other than 0.01 — each is refused with a message.

TensorFlow pickles (the original StyleGAN2 release, e.g. stylegan2-cat-config-f.pkl): they are
pickles of `dnnlib.tflib.network.Network` objects whose state holds the variables as numpy
arrays. They are read with the same restricted loader and mapped in `_convert_tf` (TF layouts:
conv [kh, kw, I, O] -> [O, I, kh, kw], the transposed-conv kernel of `Conv0_up` flipped, dense
[I, O] -> [O, I], style bias + 1, per-layer `noise{k}` buffers, `dlatent_avg`).
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import torch

from spidergan.gan import checkpoint as ckpt_mod
from spidergan.gan.networks import Discriminator, Generator
from spidergan.gan.safe_pickle import (  # noqa: F401  (UnsafePickleError, safe_load: the CLI's and tests' names)
    NotImportable, PersistentObject, TFNetwork, UnsafePickleError, safe_load,
)

# --------------------------------------------------------------------------- pytorch pickles
def module_state_dict(rec: PersistentObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """What `state_dict()` of the original module would return, from its record."""
    if not isinstance(rec, PersistentObject):
        raise NotImportable(f"{prefix or 'network'}: expected a network module record, got "
                           f"{type(rec).__name__}")
    st = rec.state
    out: dict[str, torch.Tensor] = {}
    skip = st.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, t in (st.get(kind) or {}).items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise NotImportable(f"{prefix}{name} is not a tensor")
            out[prefix + name] = t.detach().float().contiguous().clone()
    for name, child in (st.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def _child(rec: PersistentObject, path: str) -> PersistentObject:
    for part in path.split("."):
        rec = (rec.state.get("_modules") or {}).get(part)
        if not isinstance(rec, PersistentObject):
            raise NotImportable(f"the network has no module {path!r}")
    return rec


def _attr(rec: PersistentObject, name: str, default=None):
    return rec.state.get(name, default)


def _infer_arch(G: PersistentObject, D: PersistentObject, sd_g: dict) -> dict:
    kw = _attr(G, "_init_kwargs") or {}
    syn_kw = dict(kw.get("synthesis_kwargs") or {})
    map_kw = dict(kw.get("mapping_kwargs") or {})
    if int(_attr(G, "c_dim", kw.get("c_dim", 0)) or 0) != 0:
        raise NotImportable("conditional networks (c_dim > 0) are not supported")
    if int(_attr(G, "img_channels", 3)) != 3:
        raise NotImportable("only RGB networks (img_channels = 3) are supported")
    syn = _child(G, "synthesis")
    blocks = [int(m.group(1)) for k in sd_g if (m := re.fullmatch(r"synthesis\.b(\d+)\.torgb\.weight", k))]
    resolution = int(_attr(G, "img_resolution", _attr(syn, "img_resolution", max(blocks, default=0))))
    n_map = sum(1 for k in sd_g if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    z_dim, w_dim = sd_g["mapping.fc0.weight"].shape[1], sd_g["mapping.fc0.weight"].shape[0]
    # channel schedule: from the init kwargs (NVIDIA defaults 32768 / 512), else from shapes
    top = sd_g[f"synthesis.b{resolution}.conv1.weight"].shape[0]
    widest = max(v.shape[0] for k, v in sd_g.items() if re.fullmatch(r"synthesis\.b\d+\.conv1\.weight", k))
    # NVIDIA's defaults (32768 / 512) apply when the init kwargs exist but leave them out;
    # without init kwargs the smallest schedule that fits the shapes (checked against all later)
    channel_base = int(syn_kw.get("channel_base", 32768 if kw else top * resolution))
    channel_max = int(syn_kw.get("channel_max", 512 if kw else widest))
    for path in ("synthesis." + blk for blk in _modules(syn)):
        arch = _attr(_child(G, path), "architecture", "skip")
        if arch != "skip":
            raise NotImportable(f"G architecture {arch!r} is not supported (only 'skip')")
    for blk in _modules(D):
        arch = _attr(_child(D, blk), "architecture", "resnet")
        if arch != "resnet":
            raise NotImportable(f"D architecture {arch!r} is not supported (only 'resnet')")
    fc0 = _child(G, "mapping.fc0")
    lr_mul = float(_attr(fc0, "bias_gain", 0.01))
    if not math.isclose(lr_mul, 0.01, rel_tol=1e-6):
        raise NotImportable(f"mapping lr multiplier {lr_mul} is not supported (only 0.01)")
    clamp = _attr(_child(G, f"synthesis.b{resolution}.conv1"), "conv_clamp", syn_kw.get("conv_clamp"))
    d_clamp = _attr(_child(D, f"b{resolution}.conv0"), "conv_clamp", clamp)
    if (clamp or 0) != (d_clamp or 0):
        raise NotImportable(f"G conv_clamp {clamp} != D conv_clamp {d_clamp}: ours share one value")
    mbstd = _child(D, "b4.mbstd")
    if int(_attr(mbstd, "num_channels", 1)) != 1:
        raise NotImportable("minibatch std with more than one channel is not supported")
    group = _attr(mbstd, "group_size", 4)
    if group is None:  # NVIDIA: the whole minibatch is one group; ours needs a fixed size
        raise NotImportable("D's minibatch std has no group size (whole batch): not supported")
    return {"resolution": resolution, "channel_base": channel_base, "channel_max": channel_max,
            "mapping_layers": n_map or int(map_kw.get("num_layers", 8)), "z_dim": int(z_dim),
            "w_dim": int(w_dim), "mbstd_group": int(group),
            "conv_clamp": float(clamp or 0.0)}


def _modules(rec: PersistentObject) -> list[str]:
    return [k for k, v in (rec.state.get("_modules") or {}).items() if v is not None]


def build_networks(arch: dict) -> tuple[Generator, Discriminator]:
    clamp = arch["conv_clamp"] or None
    G = Generator(z_dim=arch["z_dim"], w_dim=arch["w_dim"], img_resolution=arch["resolution"],
                  mapping_layers=arch["mapping_layers"], channel_base=arch["channel_base"],
                  channel_max=arch["channel_max"], conv_clamp=clamp)
    D = Discriminator(img_resolution=arch["resolution"], channel_base=arch["channel_base"],
                      channel_max=arch["channel_max"], mbstd_group_size=arch["mbstd_group"],
                      conv_clamp=clamp)
    return G, D


def _check_against(net: torch.nn.Module, sd: dict, what: str) -> dict:
    ours = net.state_dict()
    missing = sorted(set(ours) - set(sd))
    extra = sorted(set(sd) - set(ours))
    shapes = [f"{k}: {tuple(sd[k].shape)} vs ours {tuple(ours[k].shape)}"
              for k in ours if k in sd and sd[k].shape != ours[k].shape]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:8]}{' ...' if len(extra) > 8 else ''}")
        if shapes:
            parts.append(f"shapes differ: {shapes[:8]}")
        raise NotImportable(f"{what} does not map onto our network: " + "; ".join(parts))
    net.load_state_dict(sd)  # proves the mapping is complete
    return {k: v.clone() for k, v in net.state_dict().items()}


def _convert_pytorch(data: dict) -> dict:
    G_rec, D_rec, Ge_rec = data.get("G"), data.get("D"), data.get("G_ema")
    if Ge_rec is None and G_rec is None:
        raise NotImportable("the pickle holds no generator (G / G_ema)")
    if D_rec is None:
        raise NotImportable("the pickle holds no discriminator (D); transfer learning needs one")
    G_rec = G_rec if G_rec is not None else Ge_rec
    Ge_rec = Ge_rec if Ge_rec is not None else G_rec
    sd_g, sd_ge, sd_d = (module_state_dict(r) for r in (G_rec, Ge_rec, D_rec))
    if "mapping.fc0.weight" not in sd_ge:
        raise NotImportable("G has no mapping.fc0.weight: not a StyleGAN2 generator")
    arch = _infer_arch(Ge_rec, D_rec, sd_ge)
    if G_rec is not Ge_rec and _infer_arch(G_rec, D_rec, sd_g) != arch:
        raise NotImportable("G and G_ema have different architectures")
    G, D = build_networks(arch)
    out = {"arch": arch,
           "G": _check_against(G, sd_g, "G"), "G_ema": _check_against(G, sd_ge, "G_ema"),
           "D": _check_against(D, sd_d, "D")}
    pipe = data.get("augment_pipe")
    p = None
    if isinstance(pipe, PersistentObject):
        p_t = (pipe.state.get("_buffers") or {}).get("p")
        if isinstance(p_t, torch.Tensor):
            p = float(p_t.reshape(-1)[0])
    out["augment_p"] = p
    out["format"] = "stylegan2-ada-pytorch"
    return out


# --------------------------------------------------------------------------- TF pickles
def tf_variables(net: TFNetwork, prefix: str = "") -> dict[str, np.ndarray]:
    """All variables of a TF Network and its components, named `component/.../var`."""
    out = {}
    for name, value in net.state.get("variables") or []:
        out[prefix + name] = np.asarray(value)
    for name, comp in (net.state.get("components") or {}).items():
        if isinstance(comp, TFNetwork):
            out.update(tf_variables(comp, prefix + name + "/"))
    return out


def _tf_g(tf: dict, res_log2: int) -> dict:
    """Our G state from TF G variables (the mapping legacy.py of stylegan2-ada uses)."""
    sd = {}

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # keeps 0-d shapes

    i = 0
    while f"mapping/Dense{i}/weight" in tf:
        sd[f"mapping.fc{i}.weight"] = t(tf[f"mapping/Dense{i}/weight"].T)
        sd[f"mapping.fc{i}.bias"] = t(tf[f"mapping/Dense{i}/bias"])
        i += 1
    sd["mapping.w_avg"] = t(tf["dlatent_avg"])

    def layer(ours: str, theirs: str, noise_idx: int, r: int, flip: bool = False):
        w = tf[f"synthesis/{theirs}/weight"]
        if flip:
            w = w[::-1, ::-1]
        sd[f"{ours}.weight"] = t(w.transpose(3, 2, 0, 1))
        sd[f"{ours}.bias"] = t(tf[f"synthesis/{theirs}/bias"])
        sd[f"{ours}.affine.weight"] = t(tf[f"synthesis/{theirs}/mod_weight"].T)
        sd[f"{ours}.affine.bias"] = t(tf[f"synthesis/{theirs}/mod_bias"] + 1)
        sd[f"{ours}.noise_strength"] = t(tf[f"synthesis/{theirs}/noise_strength"])
        sd[f"{ours}.noise_const"] = t(tf[f"synthesis/noise{noise_idx}"][0, 0])

    def torgb(r: int):
        sd[f"synthesis.b{r}.torgb.weight"] = t(tf[f"synthesis/{r}x{r}/ToRGB/weight"].transpose(3, 2, 0, 1))
        sd[f"synthesis.b{r}.torgb.bias"] = t(tf[f"synthesis/{r}x{r}/ToRGB/bias"])
        sd[f"synthesis.b{r}.torgb.affine.weight"] = t(tf[f"synthesis/{r}x{r}/ToRGB/mod_weight"].T)
        sd[f"synthesis.b{r}.torgb.affine.bias"] = t(tf[f"synthesis/{r}x{r}/ToRGB/mod_bias"] + 1)

    sd["synthesis.b4.const"] = t(tf["synthesis/4x4/Const/const"][0])
    layer("synthesis.b4.conv1", "4x4/Conv", 0, 4)
    torgb(4)
    for lg in range(3, res_log2 + 1):
        r = 2 ** lg
        layer(f"synthesis.b{r}.conv0", f"{r}x{r}/Conv0_up", 2 * lg - 5, r, flip=True)
        layer(f"synthesis.b{r}.conv1", f"{r}x{r}/Conv1", 2 * lg - 4, r)
        torgb(r)
    return sd


def _tf_d(tf: dict, res_log2: int) -> dict:
    sd = {}

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # keeps 0-d shapes

    def conv(ours, theirs, bias=True):
        sd[f"{ours}.weight"] = t(tf[f"{theirs}/weight"].transpose(3, 2, 0, 1))
        if bias:
            sd[f"{ours}.bias"] = t(tf[f"{theirs}/bias"])

    r0 = 2 ** res_log2
    conv(f"b{r0}.fromrgb", f"{r0}x{r0}/FromRGB")
    for lg in range(res_log2, 2, -1):
        r = 2 ** lg
        conv(f"b{r}.conv0", f"{r}x{r}/Conv0")
        conv(f"b{r}.conv1", f"{r}x{r}/Conv1_down")
        conv(f"b{r}.skip", f"{r}x{r}/Skip", bias=False)
    conv("b4.conv", "4x4/Conv")
    sd["b4.fc.weight"] = t(tf["4x4/Dense0/weight"].T)
    sd["b4.fc.bias"] = t(tf["4x4/Dense0/bias"])
    sd["b4.out.weight"] = t(tf["Output/weight"].T)
    sd["b4.out.bias"] = t(tf["Output/bias"])
    return sd


def _with_buffers(net: torch.nn.Module, sd: dict) -> dict:
    """TF pickles store no FIR filters: take ours (the same [1, 3, 3, 1] filter)."""
    full = dict(sd)
    for k, v in net.state_dict().items():
        if k.endswith("resample_filter") and k not in full:
            full[k] = v
    return full


def _convert_tf(data) -> dict:
    if not (isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetwork) for n in data)):
        raise NotImportable("a TF StyleGAN2 pickle holds the tuple (G, D, Gs)")
    for net, arch_ok in ((data[0], "skip"), (data[1], "resnet"), (data[2], "skip")):
        kw = net.state.get("static_kwargs") or {}
        if (kw.get("label_size") or 0) > 0:
            raise NotImportable("conditional networks (label_size > 0) are not supported")
        if kw.get("architecture", arch_ok) != arch_ok:
            raise NotImportable(f"TF architecture {kw['architecture']!r} is not supported "
                                f"(only G 'skip' / D 'resnet')")
        if "version" in net.state and int(net.state["version"]) < 4:
            raise NotImportable("TF pickle version < 4 (pre-StyleGAN2 networks)")
    g_kw = data[2].state.get("static_kwargs") or {}
    d_kw = data[1].state.get("static_kwargs") or {}
    # StyleGAN2-ADA's TF networks may clamp (256 for fp16); the original StyleGAN2 does not
    clamp = float(g_kw.get("conv_clamp") or 0.0)
    if float(d_kw.get("conv_clamp") or 0.0) != clamp:
        raise NotImportable("G and D conv_clamp differ: ours share one value")
    tf_G, tf_D, tf_Gs = (tf_variables(n) for n in data)
    try:
        z_dim, w_dim = tf_Gs["mapping/Dense0/weight"].shape
        tops = [k for k in tf_Gs if re.fullmatch(r"synthesis/\d+x\d+/ToRGB/weight", k)]
        resolution = max(int(k.split("/")[1].split("x")[0]) for k in tops)
        res_log2 = int(round(math.log2(resolution)))
        n_map = sum(1 for k in tf_Gs if re.fullmatch(r"mapping/Dense\d+/weight", k))
        top = tf_Gs[f"synthesis/{resolution}x{resolution}/Conv1/weight"].shape[3]
        widest = tf_Gs["synthesis/4x4/Conv/weight"].shape[3]
        mbstd = int(d_kw.get("mbstd_group_size") or 4)  # TF D_stylegan2's default
        # TF's fmap_base counts channels at half the resolution (legacy.py doubles it too)
        base = int(g_kw["fmap_base"]) * 2 if "fmap_base" in g_kw else int(top * resolution)
        arch = {"resolution": resolution, "channel_base": base,
                "channel_max": int(g_kw.get("fmap_max", widest)), "mapping_layers": n_map, "z_dim": int(z_dim),
                "w_dim": int(w_dim), "mbstd_group": mbstd, "conv_clamp": clamp}
        G, D = build_networks(arch)
        sd = {"G": _with_buffers(G, _tf_g(tf_G, res_log2)),
              "G_ema": _with_buffers(G, _tf_g(tf_Gs, res_log2)),
              "D": _with_buffers(D, _tf_d(tf_D, res_log2))}
    except KeyError as e:
        raise NotImportable(f"TF pickle lacks variable {e.args[0]!r}: not a StyleGAN2 config-e/f "
                           f"network") from None
    return {"arch": arch, "G": _check_against(G, sd["G"], "G"),
            "G_ema": _check_against(G, sd["G_ema"], "G_ema"),
            "D": _check_against(D, sd["D"], "D"), "augment_p": None, "format": "stylegan2-tf"}


# --------------------------------------------------------------------------- entry point
def convert(data) -> dict:
    """Networks from an unpickled (restricted) file: {'arch', 'G', 'D', 'G_ema', 'augment_p'}."""
    if isinstance(data, dict) and any(k in data for k in ("G", "G_ema", "D")):
        return _convert_pytorch(data)
    if isinstance(data, tuple):
        return _convert_tf(data)
    raise NotImportable("not a StyleGAN2 network pickle (expected a dict with G, D, G_ema, or a "
                       "TF (G, D, Gs) tuple)")


def import_checkpoint(src: str | Path, out: str | Path) -> dict:
    """Convert NVIDIA network pickle `src` into our checkpoint `out`; returns a summary."""
    src = Path(src)
    data = safe_load(src)
    try:
        nets = convert(data)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise NotImportable(f"{src}: unexpected network layout ({type(e).__name__}: {e})") from None
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    arch = nets["arch"]
    p = nets["augment_p"]
    ckpt_mod.save(out, {
        "params": dict(arch), "arch": dict(arch), "seed": 0, "dataset_sha256": "",
        "G": nets["G"], "D": nets["D"], "G_ema": nets["G_ema"],
        "augment_p": torch.tensor(p if p is not None else 0.0),
        "nimg": 0, "step": 0, "history": {},
        "source": {"file": src.name, "sha256": sha, "format": nets["format"],
                   "augment_p_present": p is not None},
    })
    return {"out": str(out), "format": nets["format"], "arch": arch, "augment_p": p,
            "sha256": sha}


def params_overrides(arch: dict) -> list[str]:
    """`-S train.key=value` settings that make train's networks match an imported checkpoint."""
    out = []
    for k in (*ckpt_mod.ARCH_KEYS, "conv_clamp"):
        v = arch[k]
        out.append(f"train.{k}={int(v) if float(v).is_integer() else v}")
    return out
