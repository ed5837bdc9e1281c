"""Low-dose CT image translation networks (Jung et al., MICCAI 2022: unsupervised LDCT denoising with patch-wise
deep metric learning), as the official code (jcy132/DML_CT) builds them, scaled to a CPU.

The translator maps a low-dose FBP image x (B, 1, H, W) on the unit scale (HU window [-1000, 1000] -> [0, 1]) to
a denoised image of the same shape. With ``wavelet_split`` (the official code's default: its ``is_wt`` option is
always on) only the high band is translated:

    x = L(x) + H(x),   L(x) = the db3 periodized wavelet low band of ``levels`` levels (details zeroed;
                       5 at 256^2: an 8 x 8 low band, as the official 6 levels at 512^2),
    G(x) = L(x) + g(H(x)),

so the low-frequency content, and with it the CT numbers of large regions, passes through unchanged by
construction. ``g`` is a small U-Net that predicts the noise of the high band (g(h) = h - net(h), the last layer
initialised at zero so training starts at the identity). Its first two encoder stages (full and half resolution)
are the feature layers of the patch-wise metric loss (:mod:`wavepatch.prior.ldct_losses`).

The discriminator is a spectral-norm PatchGAN (depth 3) on the whole image (low + high band), fed
(x - 0.5) * ``disc_scale`` (HU / 100 at the default 20): spectral norm caps each layer's gain at 1, and on the unit
scale noise of tens of HU is too small for it to detect (measured: no learning in 300 steps at scale 1, the loss
falling at 20). The projection
head is one two-layer MLP per feature layer onto unit vectors of ``feature_dim`` (the official "convF" head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wavepatch.physics.blur import gaussian_lowpass
from wavepatch.types import JsonConfig
from wavepatch.wavelets import dwt2_periodized, idwt2_periodized

Tensor = torch.Tensor


@dataclass
class LDCTConfig(JsonConfig):
    """Architecture of a low-dose CT translator (saved with every checkpoint). kind: always 'ldct'; objective:
    'metric' (LSGAN + identity + patch-metric), 'gan' (the same with the metric weight at 0) or 'supervised'
    (MSE on pairs): recorded so a user knows what a file is."""

    kind: str = "ldct"
    objective: str = "metric"
    channels: int = 32
    res_blocks: int = 3
    wavelet_split: bool = True
    wavelet: str = "db3"
    levels: int = 5
    feature_dim: int = 128
    disc_channels: int = 32
    disc_scale: float = 20.0
    window: tuple[float, float] = (-1000.0, 1000.0)

    @classmethod
    def from_dict(cls, data: dict) -> LDCTConfig:
        cfg = super().from_dict(data)
        cfg.window = tuple(cfg.window)
        if cfg.kind != "ldct" or cfg.objective not in ("metric", "gan", "supervised"):
            raise ValueError(f"not an LDCT translator config (kind {cfg.kind!r}, objective {cfg.objective!r})")
        if min(cfg.channels, cfg.res_blocks, cfg.levels, cfg.feature_dim, cfg.disc_channels) < 1:
            raise ValueError("LDCT config sizes must be positive")
        return cfg


def wavelet_low_band(x: Tensor, wavelet: str = "db3", levels: int = 6) -> Tensor:
    """L(x): the image (B, C, H, W) rebuilt from its level-``levels`` periodized wavelet low band alone. Sides
    that are not multiples of 2**levels are reflect-padded (then cropped back)."""
    h, w = x.shape[-2:]
    m = 2**levels
    ph, pw = (-h) % m, (-w) % m
    xp = F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
    low, details = dwt2_periodized(xp, wavelet, levels)
    out = idwt2_periodized(low, [torch.zeros_like(d) for d in details], wavelet)
    return out[..., :h, :w]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="reflect")


class _ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), nn.GroupNorm(8, c), nn.SiLU(), _conv(c, c), nn.GroupNorm(8, c))

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x + self.body(x))


class Translator(nn.Module):
    """G: low-dose image (B, 1, H, W) -> denoised image (module docstring). ``encode`` gives the metric loss's
    feature layers of a high-band input: [(B, C, H, W), (B, 2C, H/2, W/2)]."""

    def __init__(self, cfg: LDCTConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.cfg = cfg
        self.enc1 = nn.Sequential(_conv(1, c), nn.SiLU())
        self.enc2 = nn.Sequential(_conv(c, 2 * c, stride=2), nn.GroupNorm(8, 2 * c), nn.SiLU())
        self.enc3 = nn.Sequential(_conv(2 * c, 4 * c, stride=2), nn.GroupNorm(8, 4 * c), nn.SiLU())
        self.mid = nn.Sequential(*[_ResBlock(4 * c) for _ in range(cfg.res_blocks)])
        self.dec2 = nn.Sequential(_conv(4 * c + 2 * c, 2 * c), nn.GroupNorm(8, 2 * c), nn.SiLU())
        self.dec1 = nn.Sequential(_conv(2 * c + c, c), nn.SiLU())
        self.out = nn.Conv2d(c, 1, 3, padding=1, padding_mode="reflect")
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(L(x), H(x)) with x = L + H; (0, x) without the wavelet split."""
        if not self.cfg.wavelet_split:
            return torch.zeros_like(x), x
        low = wavelet_low_band(x, self.cfg.wavelet, self.cfg.levels)
        return low, x - low

    def encode(self, h: Tensor) -> list[Tensor]:
        f1 = self.enc1(h)
        return [f1, self.enc2(f1)]

    def translate_band(self, h: Tensor) -> Tensor:
        """g(h) = h - net(h) for a band (B, 1, H, W) with H, W multiples of 4 (``forward`` pads)."""
        f1, f2 = self.encode(h)
        z = self.mid(self.enc3(f2))
        z = F.interpolate(z, scale_factor=2.0, mode="nearest")
        z = self.dec2(torch.cat([z, f2], 1))
        z = F.interpolate(z, scale_factor=2.0, mode="nearest")
        z = self.dec1(torch.cat([z, f1], 1))
        return h - self.out(z)

    def forward(self, x: Tensor) -> Tensor:
        low, high = self.split(x)
        hgt, wid = x.shape[-2:]
        ph, pw = (-hgt) % 4, (-wid) % 4
        if ph or pw:
            high = F.pad(high, (0, pw, 0, ph), mode="reflect")
        return low + self.translate_band(high)[..., :hgt, :wid]


def _sn_conv(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(nn.Conv2d(cin, cout, 4, stride=stride, padding=1))


class Discriminator(nn.Module):
    """PatchGAN with spectral norm: image (B, 1, H, W) -> realism map (B, 1, ~H/8, ~W/8)."""

    def __init__(self, cfg: LDCTConfig) -> None:
        super().__init__()
        c = cfg.disc_channels
        self.scale = cfg.disc_scale
        self.net = nn.Sequential(
            _sn_conv(1, c, 2), nn.LeakyReLU(0.2),
            _sn_conv(c, 2 * c, 2), nn.LeakyReLU(0.2),
            _sn_conv(2 * c, 4 * c, 2), nn.LeakyReLU(0.2),
            _sn_conv(4 * c, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - 0.5) * self.scale)


class ProjectionHead(nn.Module):
    """One MLP per feature layer: sampled feature vectors (B, N, C_l) -> unit vectors (B, N, feature_dim)."""

    def __init__(self, cfg: LDCTConfig) -> None:
        super().__init__()
        d, c = cfg.feature_dim, cfg.channels
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(ci, d), nn.ReLU(), nn.Linear(d, d)) for ci in (c, 2 * c))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return [F.normalize(mlp(f), dim=-1) for mlp, f in zip(self.mlps, feats, strict=True)]


class LDCTModel(nn.Module):
    """Everything a training run keeps: translator, discriminator, head, and ``ema``, the exponential moving
    average of the translator's weights (the one used at inference: adversarial training oscillates, and the
    average of the last few hundred steps is steadier than the last step)."""

    def __init__(self, cfg: LDCTConfig) -> None:
        super().__init__()
        self.translator = Translator(cfg)
        self.discriminator = Discriminator(cfg)
        self.head = ProjectionHead(cfg)
        self.ema = Translator(cfg)
        self.ema.load_state_dict(self.translator.state_dict())
        self.ema.requires_grad_(False)

    @torch.no_grad()
    def update_ema(self, halflife_steps: float) -> None:
        beta = 0.5 ** (1.0 / halflife_steps)
        for e, p in zip(self.ema.parameters(), self.translator.parameters(), strict=True):
            e.lerp_(p, 1.0 - beta)
        for e, b in zip(self.ema.buffers(), self.translator.buffers(), strict=True):
            e.copy_(b)


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def hu_guard(x: Tensor, translated: Tensor, width: float) -> Tensor:
    """The CT-number guard: x + c - gauss_width(c) with c = translated - x, i.e. only the fine-scale part of the
    translator's correction (B, 1, H, W), unit scale. Noise of an FBP image lives mostly at fine scales, while a
    shift of the CT numbers of a region is a correction at the region's scale: measured on training slices, the
    bundled translator brightens noisy bone by +36 / +74 HU (I0 = 1e4 / 2.5e3) and not clean bone, and a 1-px
    guard brings that to FBP's own bias while keeping most of the PSNR gain (docs/results.md section 18.1).
    width 0: the translator's output unchanged (the paper's method)."""
    if width == 0:
        return translated
    c = translated - x
    return x + c - gaussian_lowpass(c, width)


def denoise_image(translator: Translator, x: Tensor, guard: float = 0.0) -> Tensor:
    """Translate a batch (B, 1, H, W) of unit-scale low-dose images without autograd; float32 (B, 1, H, W);
    ``guard`` > 0: through :func:`hu_guard` of that width (px). The network is fully convolutional: any H, W (a
    512^2 image needs about 0.4 GB of activations)."""
    with torch.no_grad():
        x = x.float()
        return hu_guard(x, translator(x), guard)
