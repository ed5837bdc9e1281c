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
        # computed on the CPU even when the module is built under torch.device("meta") (the checkpoint shape check):
        # meta-device math would import torch's meta kernels, ~2 s of start-up
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, device="cpu") / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        # c_noise = ln(sigma)/4 is O(1); scale up so the embedding resolves it.
        arg = (1000.0 * t.float())[:, None] * self.freqs[None]
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
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(emb)
        scale, shift = e.reshape(*e.shape, *[1] * (x.ndim - 2)).chunk(2, dim=1)  # broadcast over the spatial dims
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
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
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, math.prod(spatial)).transpose(-1, -2).unbind(1)
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
        emb = self.embed(c_noise.reshape(-1).expand(x.shape[0]))
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
        return self.conv_out(F.silu(self.norm_out(h)))
