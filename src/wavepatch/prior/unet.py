"""A compact noise-conditioned UNet (DDPM++-like): the network F inside the EDM preconditioning.

Fully convolutional, so one trained network runs on any patch or image size divisible by
``2 ** (len(channel_mult) - 1)`` along every axis. ``dims`` picks 2-D images (B, C, H, W) or 3-D volumes
(B, C, D, H, W): the same layers with Conv2d or Conv3d. Width, depth, attention and dropout are config values
(``UNetConfig``), saved next to every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

Tensor = torch.Tensor


@dataclass
class UNetConfig:
    """Architecture of ``UNet``.

    in_channels: image channels + extra conditioning channels (dims position channels for patch priors).
    out_channels: image channels. base_channels: width of the first level; level i has
    base_channels * channel_mult[i]. num_blocks: residual blocks per level on the way down (one more on the
    way up). attention: self-attention in the bottleneck (lowest resolution). dropout: inside residual blocks.
    dims: spatial dimensions, 2 (images) or 3 (volumes); configs without it (older checkpoints) are 2-D.
    """

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_blocks: int = 2
    attention: bool = True
    dropout: float = 0.0
    dims: int = 2

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.dims not in (2, 3):
            raise ValueError(f"UNetConfig.dims must be 2 or 3, got {self.dims}")
        if self.in_channels < 1 or self.out_channels < 1 or self.base_channels < 4 or self.num_blocks < 1:
            raise ValueError(f"invalid UNetConfig {self}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be positive integers, got {self.channel_mult}")

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this."""
        return 2 ** (len(self.channel_mult) - 1)


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _channels_last(x: Tensor) -> bool:
    """Whether ``x`` (B, C, *spatial), C > 1, is stored channels-last (and not also plain contiguous); also for a
    convolution weight (C_out, C_in, *kernel)."""
    fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    return x.ndim in (4, 5) and not x.is_contiguous() and x.is_contiguous(memory_format=fmt)


def _channel_sums(flat: Tensor, chunk_bytes: int = 1 << 20) -> tuple[Tensor, Tensor]:
    """Per-channel sums of x and x**2 over axis 1 of ``flat`` (B, N, C), in float32 (float64 for float64 input):
    (B, C) each. The upcast copy is made about ``chunk_bytes`` at a time (whole items, or an item cut into k
    equal runs of N / k rows), so temporaries stay in cache: large fresh buffers page-fault."""
    acc = torch.promote_types(flat.dtype, torch.float32)
    b, n, c = flat.shape
    row = c * torch.finfo(acc).bits // 8
    k = next((d for d in range(1, n + 1) if n % d == 0 and (n // d) * row <= chunk_bytes), n)
    runs = flat.reshape(b * k, n // k, c)
    step = max(1, chunk_bytes // ((n // k) * row))
    s1, s2 = [], []
    for part in runs.split(step):
        f = part.to(acc)
        s1.append(f.sum(1))
        s2.append((f * f).sum(1))
    return torch.cat(s1).view(b, k, c).sum(1), torch.cat(s2).view(b, k, c).sum(1)


def norm_act(norm: nn.GroupNorm, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None,
             act: bool = True) -> Tensor:
    """``norm(x)``, then the optional modulation ``* (1 + scale) + shift`` (scale, shift: (B, C, 1, ...)), then
    SiLU when ``act``. Same shape, dtype and memory format as x (B, C, *spatial).

    Channels-last input (the CPU inference layout, :func:`wavepatch.prior.model.inference_network`) takes one fused
    per-channel affine pass whose coefficients come from float32 per-channel sums: PyTorch's own channels-last
    GroupNorm kernel is 5-30x slower than its NCHW kernel in bfloat16 on the CPU (4-8 ms against 0.2-0.5 ms for
    (25, 64, 28, 28)). The statistics are the same (biased variance, ``norm.eps``); only the rounding differs.
    """
    if not _channels_last(x):
        h = norm(x)
        if scale is not None:
            h = h * (1 + scale) + shift
        return F.silu(h) if act else h
    b, c = x.shape[:2]
    g = norm.num_groups
    flat = x.movedim(1, -1).reshape(b, -1, c)  # a view: channels-last memory is (B, *spatial, C)
    n = flat.shape[1] * (c // g)
    s1, s2 = _channel_sums(flat)
    mean = s1.view(b, g, -1).sum(2, keepdim=True) / n  # (B, G, 1)
    sq = s2.view(b, g, -1).sum(2, keepdim=True) / n
    rstd = torch.rsqrt((sq - mean * mean).clamp_min(0) + norm.eps)
    acc = s1.dtype
    weight = norm.weight.to(acc).view(1, g, -1) if norm.affine else 1.0
    bias = norm.bias.to(acc).view(1, g, -1) if norm.affine else 0.0
    a = (rstd * weight).expand(b, g, c // g).reshape(b, c)
    a0 = (bias - mean * rstd * weight).expand(b, g, c // g).reshape(b, c)
    if scale is not None:
        a0 = a0 * (1 + scale.reshape(b, c).to(acc)) + shift.reshape(b, c).to(acc)
        a = a * (1 + scale.reshape(b, c).to(acc))
    view = (b, c) + (1,) * (x.ndim - 2)
    h = torch.addcmul(a0.to(x.dtype).view(view), x, a.to(x.dtype).view(view))
    return F.silu(h, inplace=not h.requires_grad) if act else h  # h is fresh: in place unless autograd needs it


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


class FourierEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise condition c_noise (B,) -> (B, dim)."""

    def __init__(self, dim: int, max_period: float = 10_000.0) -> None:
        super().__init__()
        half = dim // 2
        self.half, self.max_period = half, max_period

    def forward(self, t: Tensor) -> Tensor:
        # float32 always (also inside a bfloat16 network), so no buffer a dtype cast could round; built per call,
        # which also keeps meta-device construction (the checkpoint shape check) free of meta kernels (~2 s)
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(self.half, device=t.device) / self.half)
        # c_noise = ln(sigma)/4 is O(1); scale up so the embedding resolves it.
        arg = (1000.0 * t.float())[:, None] * freqs[None]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the noise embedding as a per-channel scale and shift."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, dims: int = 2) -> None:
        super().__init__()
        conv = _conv(dims)
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = conv(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(norm_act(self.norm1, x))
        e = self.emb(emb)
        scale, shift = e.reshape(*e.shape, *[1] * (x.ndim - 2)).chunk(2, dim=1)  # broadcast over the spatial dims
        h = self.conv2(self.dropout(norm_act(self.norm2, h, scale, shift)))
        return (self.skip(x) + h) / math.sqrt(2)


class SelfAttention(nn.Module):
    """Single-head self-attention over all pixels (voxels) of a (B, C, *spatial) map, residual."""

    def __init__(self, channels: int, dims: int = 2) -> None:
        super().__init__()
        conv = _conv(dims)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = conv(channels, 3 * channels, 1)
        self.proj = conv(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        qkv = self.qkv(norm_act(self.norm, x, act=False))
        q, k, v = qkv.reshape(b, 3, c, math.prod(spatial)).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return (x + self.proj(out.transpose(-1, -2).reshape(b, c, *spatial))) / math.sqrt(2)


class UNet(nn.Module):
    """F(x, c_noise): (B, in_channels, *spatial), (B,) -> (B, out_channels, *spatial).

    spatial: (H, W) for dims = 2, (D, H, W) for dims = 3, each a multiple of ``divisor``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        dims = config.dims
        conv = _conv(dims)
        ch = config.base_channels
        emb_dim = 4 * ch
        self.embed = nn.Sequential(FourierEmbedding(ch), nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = conv(config.in_channels, ch, 3, padding=1)
        widths = [ch * m for m in config.channel_mult]
        self.down = nn.ModuleList()
        skips = [ch]
        c = ch
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(config.num_blocks):
                blocks.append(ResBlock(c, w, emb_dim, config.dropout, dims))
                c = w
                skips.append(c)
            down = conv(c, c, 3, stride=2, padding=1) if level < len(widths) - 1 else None
            if down is not None:
                skips.append(c)
            self.down.append(nn.ModuleDict({"blocks": blocks, **({"down": down} if down is not None else {})}))
        self.mid1 = ResBlock(c, c, emb_dim, config.dropout, dims)
        self.mid_attn = SelfAttention(c, dims) if config.attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, config.dropout, dims)
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(config.num_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), w, emb_dim, config.dropout, dims))
                c = w
            up = conv(c, c, 3, padding=1) if level > 0 else None
            self.up.append(nn.ModuleDict({"blocks": blocks, **({"up": up} if up is not None else {})}))
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = conv(c, config.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        d, dims = self.config.divisor, self.config.dims
        if x.ndim != dims + 2:
            raise ValueError(f"a {dims}-D UNet takes (B, C, {'D, ' if dims == 3 else ''}H, W) input, got shape "
                             f"{tuple(x.shape)}")
        if any(s % d for s in x.shape[2:]):
            raise ValueError(f"UNet input size {tuple(x.shape[2:])} must be a multiple of {d} along every axis")
        # the network's own dtype and layout (bfloat16 channels-last for CPU inference); the embedding's sinusoids
        # are computed in float32 first
        weight = self.conv_in.weight
        fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        x = x.to(weight.dtype, memory_format=fmt if _channels_last(weight) else torch.contiguous_format)
        emb = self.embed[1:](self.embed[0](c_noise.reshape(-1).expand(x.shape[0])).to(weight.dtype))
        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for block in level["blocks"]:
                h = block(h, emb)
                hs.append(h)
            if "down" in level:
                h = level["down"](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for level in self.up:
            for block in level["blocks"]:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if "up" in level:
                h = level["up"](F.interpolate(h, scale_factor=2.0, mode="nearest"))  # nearest, 2-D or 3-D
        return self.conv_out(norm_act(self.norm_out, h))
