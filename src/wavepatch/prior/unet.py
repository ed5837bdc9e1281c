"""A compact noise-conditioned UNet (DDPM++-like): the network F inside the EDM preconditioning.

Fully convolutional, so one trained network runs on any patch or image size divisible by
``2 ** (len(channel_mult) - 1)``. Width, depth, attention and dropout are config values (``UNetConfig``),
saved next to every checkpoint.
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

    in_channels: image channels + extra conditioning channels (2 position channels for patch priors).
    out_channels: image channels. base_channels: width of the first level; level i has
    base_channels * channel_mult[i]. num_blocks: residual blocks per level on the way down (one more on the
    way up). attention: self-attention in the bottleneck (lowest resolution). dropout: inside residual blocks.
    """

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_blocks: int = 2
    attention: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.in_channels < 1 or self.out_channels < 1 or self.base_channels < 4 or self.num_blocks < 1:
            raise ValueError(f"invalid UNetConfig {self}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be positive integers, got {self.channel_mult}")

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this."""
        return 2 ** (len(self.channel_mult) - 1)


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
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        # c_noise = ln(sigma)/4 is O(1); scale up so the embedding resolves it.
        arg = (1000.0 * t.float())[:, None] * self.freqs[None]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the noise embedding as a per-channel scale and shift."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return (self.skip(x) + h) / math.sqrt(2)


class SelfAttention(nn.Module):
    """Single-head self-attention over all pixels of a (B, C, H, W) map, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return (x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))) / math.sqrt(2)


class UNet(nn.Module):
    """F(x, c_noise): (B, in_channels, H, W), (B,) -> (B, out_channels, H, W); H, W multiples of ``divisor``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.base_channels
        emb_dim = 4 * ch
        self.embed = nn.Sequential(FourierEmbedding(ch), nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        widths = [ch * m for m in config.channel_mult]
        self.down = nn.ModuleList()
        skips = [ch]
        c = ch
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(config.num_blocks):
                blocks.append(ResBlock(c, w, emb_dim, config.dropout))
                c = w
                skips.append(c)
            down = nn.Conv2d(c, c, 3, stride=2, padding=1) if level < len(widths) - 1 else None
            if down is not None:
                skips.append(c)
            self.down.append(nn.ModuleDict({"blocks": blocks, **({"down": down} if down is not None else {})}))
        self.mid1 = ResBlock(c, c, emb_dim, config.dropout)
        self.mid_attn = SelfAttention(c) if config.attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, config.dropout)
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(config.num_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), w, emb_dim, config.dropout))
                c = w
            up = nn.Conv2d(c, c, 3, padding=1) if level > 0 else None
            self.up.append(nn.ModuleDict({"blocks": blocks, **({"up": up} if up is not None else {})}))
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, config.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        d = self.config.divisor
        if x.shape[-1] % d or x.shape[-2] % d:
            raise ValueError(f"UNet input size {tuple(x.shape[-2:])} must be a multiple of {d}")
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
                h = level["up"](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
