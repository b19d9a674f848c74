"""StyleGAN2 generator and discriminator (Karras et al. 2020), plain PyTorch, no custom kernels.

Written from the papers ("Analyzing and Improving the Image Quality of StyleGAN", "Training
Generative Adversarial Networks with Limited Data"), laid out so that the published
stylegan2-ada-pytorch pickles can later be imported parameter for parameter:

* module and parameter names are the same as in those pickles (table below), so an import is a
  `load_state_dict` after unpickling, no renaming;
* weights are stored "raw" (N(0, 1) at init, divided by the learning-rate multiplier) and scaled
  at run time (equalised learning rate), which is the storage convention of those pickles;
* resampling uses the same [1, 3, 3, 1] FIR low-pass filter, padding and transposed-convolution
  arrangement, so the same weights give the same images.

Parameter names (G = Generator, D = Discriminator; `res` is 4, 8, ..., resolution):

    G mapping.fc{i}.weight / .bias                 FC z->w, lr multiplier 0.01, lrelu
    G mapping.w_avg                                running mean of w (truncation trick)
    G synthesis.b4.const                           learned 4x4 constant input
    G synthesis.b{res}.conv0.*  (res > 4)          upsampling modulated 3x3 conv
    G synthesis.b{res}.conv1.*                     modulated 3x3 conv
        .affine.weight / .affine.bias              w -> styles (bias init 1)
        .weight / .bias                            conv weight [out, in, 3, 3], bias
        .noise_strength / .noise_const             per-layer noise scale, per-resolution fixed noise
    G synthesis.b{res}.torgb.affine.* / .weight / .bias    1x1 modulated conv, no demodulation
    G synthesis.b{res}.resample_filter, *.resample_filter  FIR filter buffers
    D b{res}.fromrgb.* (res = resolution)          1x1 conv from RGB
    D b{res}.conv0.*, .conv1.* (down), .skip.weight (1x1, down, no bias)   residual block
    D b4.conv.*, b4.fc.*, b4.out.*                 epilogue after minibatch std (no parameters)

Not implemented (not needed for unconditional training): class conditioning (`c_dim`, the
`mapping.embed` / D `mapping` networks), fp16 layers. The NVIDIA configs also use
`conv_clamp=256`; ours defaults to None and is a constructor argument.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_ALPHA = 0.2
LRELU_GAIN = math.sqrt(2.0)


# --------------------------------------------------------------------------- resampling
def fir_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Normalised 2-D low-pass filter: outer product of `taps`, summing to 1."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _fir(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], gain: float = 1.0):
    """Depthwise 2-D filtering with explicit (left, right, top, bottom) zero padding.

    The filter is symmetric, so correlation and convolution agree.
    """
    c = x.shape[1]
    x = F.pad(x, pad)
    w = (f * gain).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, w, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zero insertion, then the low-pass filter (gain 4 keeps the mean)."""
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, h, 2, w, 2)
    z[:, :, :, 0, :, 0] = x
    z = z.reshape(n, c, 2 * h, 2 * w)
    k = f.shape[-1]
    # padding that keeps the output aligned and exactly 2h x 2w for a 4-tap filter
    return _fir(z, f, ((k + 1) // 2, (k - 2) // 2, (k + 1) // 2, (k - 2) // 2), gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x downsampling: low-pass filter, then keep every second pixel."""
    k = f.shape[-1]
    p0, p1 = (k - 1) // 2, (k - 2) // 2
    return _fir(x, f, (p0, p1, p0, p1))[:, :, ::2, ::2]


# --------------------------------------------------------------------------- activations
def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """Add bias (over dim 1), apply activation, scale by `gain`, clamp to +-clamp."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_ALPHA)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _act_gain(act: str) -> float:
    return LRELU_GAIN if act == "lrelu" else 1.0


# --------------------------------------------------------------------------- layers
class FullyConnectedLayer(nn.Module):
    """FC layer with equalised learning rate.

    `weight` is stored as N(0,1)/lr_multiplier and multiplied at run time by
    lr_multiplier/sqrt(in_features): the effective init is He's, and Adam's step size in the
    stored parameter translates into the same relative step for every layer (equalised lr), a
    factor lr_multiplier slower for the mapping network.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str = "linear", lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, self.activation, gain=_act_gain(self.activation))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with equalised lr, optional 2x down-sampling (FIR filter + stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: float | None = None):
        super().__init__()
        if down not in (1, 2):
            raise ValueError("down must be 1 or 2")
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", fir_filter())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if self.down == 1:
            x = F.conv2d(x, w, padding=self.padding)
        else:
            # "FIR low-pass (padded by conv padding + 1), then stride-2 conv" as one conv
            x = F.conv2d(x, fold_filter(w, self.resample_filter), stride=2,
                         padding=self.padding + 1)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain=_act_gain(self.activation) * gain,
                        clamp=clamp)


def fold_filter(w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The kernel of "FIR filter `f`, then convolve with `w`" as one kernel (k + taps - 1 wide).

    Filtering and convolving are both linear, so a strided convolution after the low-pass
    filter equals one strided convolution with the full 2-D convolution of the two kernels.
    On CPU this is far faster than a separate depthwise filter pass (and its double backward,
    which R1 needs), at the same result up to rounding.
    """
    *lead, kh, kw = w.shape
    fh, fw = f.shape
    # T[j, k, u, v] = f[u - j, v - k]: the full convolution as one small matrix product
    # (a conv over thousands of 3x3 "images" is slow on CPU, forward and backward)
    t = w.new_zeros(kh, kw, kh + fh - 1, kw + fw - 1)
    for j in range(kh):
        for k in range(kw):
            t[j, k, j:j + fh, k:k + fw] = f.to(w.dtype)
    out = w.reshape(-1, kh * kw) @ t.reshape(kh * kw, -1)
    return out.reshape(*lead, kh + fh - 1, kw + fw - 1)


def _conv_up(x: torch.Tensor, w: torch.Tensor, resample_filter: torch.Tensor,
             groups: int = 1) -> torch.Tensor:
    """2x upsampling convolution: transposed conv with stride 2 followed by the FIR filter
    (gain 4 for the zeros the stride inserts). `w` is [groups * out, in, k, k] (conv2d layout).

    Computed in polyphase form: the folded (k+3)-wide transposed kernel splits into four
    k x k kernels, one per output pixel phase; one ordinary convolution at the input
    resolution computes all four, and pixel_shuffle interleaves them. Same arithmetic as
    "transposed conv, pad 1, filter", several times faster on CPU than either step alone.
    """
    wf = fold_filter(w, resample_filter * 4)  # [G*O, I, 6, 6] for k = 3
    go, i, kf, _ = wf.shape
    if kf % 2:
        raise ValueError("polyphase upsampling needs an even folded kernel")
    # phase (r, s) of output pixel (2m + r, 2n + s) correlates the input with the flipped
    # sub-kernel wf[..., r::2, s::2]; stacked with the phase innermost for pixel_shuffle
    phases = [wf[:, :, r::2, s::2].flip([2, 3]) for r in (0, 1) for s in (0, 1)]
    ws = torch.stack(phases, dim=1).reshape(go * 4, i, kf // 2, kf // 2)
    out = F.conv2d(x, ws, padding=kf // 4, groups=groups)  # 1 for the 3x3 sub-kernels
    return F.pixel_shuffle(out, 2)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True, up: bool = False,
                     resample_filter: torch.Tensor | None = None,
                     fused: bool = True) -> torch.Tensor:
    """Modulated convolution (StyleGAN2 sec. 2.2).

    The weight is scaled per sample and input channel by `styles`; with `demodulate` each output
    channel's weight is then rescaled to unit L2 norm, which replaces AdaIN's normalisation of
    the activations (and removes the droplet artefacts). `up` upsamples 2x with a transposed
    convolution followed by the FIR filter.

    `fused`: one grouped convolution with per-sample weights. Otherwise the same arithmetic is
    done on the activations (scale inputs by the styles, shared-weight convolution, scale
    outputs by the demodulation coefficients), which is much faster for training batches on CPU
    and gives the same result up to rounding.
    """
    n, c_in, h, w_ = x.shape
    c_out, _, kh, kw = weight.shape
    # styles come out of an autocast Linear as bf16; demodulation (a sum of squares and an
    # rsqrt over up to 512 * 9 terms) is done in fp32, only the convolution runs in bf16
    styles = styles.to(torch.promote_types(styles.dtype, torch.float32))
    if not fused:
        x = x * styles.reshape(n, c_in, 1, 1)
        if up:
            x = _conv_up(x, weight, resample_filter)
        else:
            x = F.conv2d(x, weight, padding=kh // 2)
        if demodulate:
            d = (weight.unsqueeze(0) * styles.reshape(n, 1, c_in, 1, 1)).square().sum(dim=[2, 3, 4])
            x = x * (d + 1e-8).rsqrt().reshape(n, c_out, 1, 1)
        return x
    wt = weight.unsqueeze(0) * styles.reshape(n, 1, c_in, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        wt = wt * (wt.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    x = x.reshape(1, n * c_in, h, w_)
    if not up:
        out = F.conv2d(x, wt.reshape(n * c_out, c_in, kh, kw), padding=kh // 2, groups=n)
        return out.reshape(n, c_out, h, w_)
    out = _conv_up(x, wt.reshape(n * c_out, c_in, kh, kw), resample_filter, groups=n)
    return out.reshape(n, c_out, 2 * h, 2 * w_)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 up: bool = False, use_noise: bool = True, conv_clamp: float | None = None):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.register_buffer("resample_filter", fir_filter())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)
        # no weight gain: demodulation makes the result independent of the weight's scale
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, up=self.up,
                             resample_filter=self.resample_filter, fused=not self.training)
        if self.use_noise and noise_mode != "none":
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution,
                                    device=x.device, dtype=x.dtype)
            elif noise_mode == "const":
                noise = self.noise_const.to(x.dtype)
            else:
                raise ValueError(f"unknown noise_mode {noise_mode!r}")
            x = x + noise * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, "lrelu", gain=LRELU_GAIN * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """1x1 modulated conv to RGB, without demodulation (the output scale matters)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=not self.training)
        return bias_act(x, self.bias, "linear", clamp=self.conv_clamp)


# --------------------------------------------------------------------------- generator
def channels_per_resolution(channel_base: int, channel_max: int, resolutions) -> dict[int, int]:
    """Feature maps per resolution: min(channel_base // res, channel_max)."""
    ch = {r: min(channel_base // r, channel_max) for r in resolutions}
    if min(ch.values()) < 1:
        raise ValueError(f"channel_base={channel_base} leaves no feature maps at "
                         f"{max(resolutions)}px: it must be at least the resolution")
    return ch


def _check_resolution(resolution: int) -> int:
    log2 = int(round(math.log2(resolution))) if resolution > 0 else 0
    if resolution < 4 or 2 ** log2 != resolution:
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
    return log2


class MappingNetwork(nn.Module):
    """z -> w: 2nd-moment normalisation, `num_layers` FC+lrelu layers at lr multiplier 0.01."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1],
                                                        activation="lrelu",
                                                        lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_w_avg: bool = True) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg and self.training and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            head = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
            x = torch.cat([head, x[:, cutoff:]], dim=1)
        return x


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network, skip architecture (toRGB at every block)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", fir_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.num_conv = 1
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True,
                                        conv_clamp=conv_clamp)
            self.num_conv = 2
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward(self, x, img, ws: torch.Tensor, noise_mode: str = "random"):
        """`ws`: [N, num_conv + 1, w_dim]; the last w drives toRGB (shared with the next conv0)."""
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise_mode=noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode=noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode=noise_mode)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int = 3,
                 channel_base: int = 32768, channel_max: int = 512,
                 conv_clamp: float | None = None):
        super().__init__()
        log2 = _check_resolution(img_resolution)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        ch = channels_per_resolution(channel_base, channel_max, self.block_resolutions)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = ch[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_ch, ch[res], w_dim, res, img_channels, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's toRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        x = img = None
        i = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, i:i + block.num_conv + 1], noise_mode=noise_mode)
            i += block.num_conv
        return img


class Generator(nn.Module):
    def __init__(self, z_dim: int = 512, w_dim: int = 512, img_resolution: int = 256,
                 img_channels: int = 3, mapping_layers: int = 8, channel_base: int = 32768,
                 channel_max: int = 512, conv_clamp: float | None = None,
                 mapping_lr_multiplier: float = 0.01):
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base,
                                          channel_max, conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers,
                                      lr_multiplier=mapping_lr_multiplier)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "random") -> torch.Tensor:
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


# --------------------------------------------------------------------------- discriminator
class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsampling) + a 1x1 downsampling skip."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", fir_filter())
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu",
                                       conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu",
                                 conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        # sqrt(0.5) on both branches keeps the sum's variance at one
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Append the mean standard deviation across a group of samples as extra feature maps.

    Sample i belongs to group i mod (N / G) (the batch is split as [G, N/G]), as in the
    published networks; G is the largest divisor of N not above `group_size`.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        f = self.num_channels
        y = x.to(torch.promote_types(x.dtype, torch.float32))  # a normalisation: at least fp32
        y = y.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [N/G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, resolution: int = 4, mbstd_group_size: int = 4,
                 mbstd_num_channels: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3,
                                activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution * resolution, in_channels,
                                      activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    def __init__(self, img_resolution: int = 256, img_channels: int = 3,
                 channel_base: int = 32768, channel_max: int = 512, mbstd_group_size: int = 4,
                 conv_clamp: float | None = None):
        super().__init__()
        log2 = _check_resolution(img_resolution)
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        ch = channels_per_resolution(channel_base, channel_max, self.block_resolutions + [4])
        for res in self.block_resolutions:
            in_ch = ch[res] if res < img_resolution else 0
            setattr(self, f"b{res}", DiscriminatorBlock(in_ch, ch[res], ch[res // 2], res,
                                                        img_channels, conv_clamp=conv_clamp))
        self.b4 = DiscriminatorEpilogue(ch[4], 4, mbstd_group_size, conv_clamp=conv_clamp)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        return self.b4(x)

    def block_names(self) -> list[str]:
        """Blocks from the input side (highest resolution first); freeze_d freezes a prefix."""
        return [f"b{r}" for r in self.block_resolutions] + ["b4"]


def count_params(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
