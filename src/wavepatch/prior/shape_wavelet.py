"""Wavelet-domain shape prior (Hui, Li, Hu, Fu, SIGGRAPH Asia 2022): a TSDF as a coarse + detail coefficient volume.

A shape is a truncated signed distance field (TSDF, voxels, negative inside, :mod:`wavepatch.geometry.sdf`) on a
G^3 grid. Its ``levels``-level periodized biorthogonal DWT (``bior6.8`` as in the paper) gives a coarse volume
(1 channel, s^3, s = G / 2^levels) and detail bands per level; the paper keeps the coarse volume and the 7
detail bands of the **coarsest** level (same side s) and drops all finer details (set to zero on inversion).
The code of a shape is those 8 channels, (8, s, s, s), each channel normalised to zero mean and unit variance
with training-set statistics. ``space='voxel'`` is the paper's "direct TSDF" ablation: the code is the TSDF
itself (1 channel, G^3), normalised the same way.

Periodization (not the paper's zero padding) keeps every band exactly s^3; the TSDF equals +truncation on the
grid border for shapes away from it, so wrapping adds no edge. At G = 64 with levels = 2 (s = 16) a training
shape's zero level set after dropping the finest details has IoU 0.94 with its mask (levels = 3, s = 8: 0.82);
measured on 24 training shapes (docs/results.md §15).

The prior holds two networks: ``generator``, an EDM denoiser (:class:`EDMDenoiser`, a 3-D UNet) over the
normalised coarse channel, and ``detail``, a 3-D UNet regressing the 7 normalised detail channels from the
normalised coarse channel (no noise input; its c_noise is 0). A voxel-space prior has no detail network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from wavepatch.prior.model import PriorConfig, build_prior
from wavepatch.prior.unet import UNet, UNetConfig
from wavepatch.wavelets import wavedec3_periodized, waverec3_periodized

Tensor = torch.Tensor
SPACES = ("wavelet", "voxel")
DETAIL_BANDS = 7  # 3-D detail bands per level


@dataclass
class ShapeCodeConfig:
    """grid: G, voxels per side. truncation: TSDF clip (voxels; default 0.1 G, the paper's +-0.1 of a unit cube).
    space: 'wavelet' (coarse + coarsest details) or 'voxel' (the TSDF). wavelet, levels: the DWT (wavelet only)."""

    grid: int = 64
    truncation: float = 6.4
    space: str = "wavelet"
    wavelet: str = "bior6.8"
    levels: int = 2

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"shape code space must be one of {SPACES}, got {self.space!r}")
        if not (math.isfinite(self.truncation) and self.truncation > 0):
            raise ValueError(f"truncation must be a positive number of voxels, got {self.truncation}")
        if self.space == "wavelet" and (self.levels < 1 or self.grid % 2**self.levels):
            raise ValueError(f"grid {self.grid} must be a multiple of 2^levels = {2 ** max(self.levels, 0)}")

    @property
    def channels(self) -> int:
        return 1 + DETAIL_BANDS if self.space == "wavelet" else 1

    @property
    def side(self) -> int:
        """Side of the code volume: G / 2^levels (wavelet) or G (voxel)."""
        return self.grid // 2**self.levels if self.space == "wavelet" else self.grid


def encode(tsdf: Tensor, code: ShapeCodeConfig) -> Tensor:
    """TSDFs (N, 1, G, G, G) -> codes (N, channels, s, s, s) in TSDF units (not normalised)."""
    if code.space == "voxel":
        return tsdf.float()
    lowpass, details = wavedec3_periodized(tsdf.float(), code.wavelet, code.levels)
    return torch.cat([lowpass, details[0][:, 0]], dim=1)


def decode(codes: Tensor, code: ShapeCodeConfig) -> Tensor:
    """Codes (N, channels, s, s, s) -> TSDFs (N, 1, G, G, G); finer detail levels are zero."""
    if code.space == "voxel":
        return codes[:, :1]
    n, s = codes.shape[0], codes.shape[-1]
    details = [codes[:, None, 1:]] + [codes.new_zeros(n, 1, DETAIL_BANDS, *(s * 2**k,) * 3)
                                      for k in range(1, code.levels)]
    return waverec3_periodized(codes[:, :1], details, code.wavelet)


def code_stats(codes: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of training codes (N, C, s, s, s)."""
    dims = (0, 2, 3, 4)
    return codes.double().mean(dims).tolist(), codes.double().std(dims).clamp_min(1e-8).tolist()


@dataclass
class ShapePriorConfig:
    """What a shape prior checkpoint holds besides weights: the code, its statistics and both architectures."""

    code: ShapeCodeConfig = field(default_factory=ShapeCodeConfig)
    generator: PriorConfig = field(default_factory=PriorConfig)
    detail: UNetConfig | None = None
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    kind: str = "shape"

    def __post_init__(self) -> None:
        if isinstance(self.code, dict):
            self.code = ShapeCodeConfig(**self.code)
        if isinstance(self.generator, dict):
            self.generator = PriorConfig(**self.generator)
        if isinstance(self.detail, dict):
            self.detail = UNetConfig(**self.detail)
        if self.kind != "shape":
            raise ValueError(f"a shape prior config has kind 'shape', got {self.kind!r}")
        c = self.code.channels
        if len(self.mean) != c or len(self.std) != c or min(self.std, default=1.0) <= 0:
            raise ValueError(f"mean and std need {c} entries (std > 0), got {len(self.mean)} and {len(self.std)}")
        g = self.generator
        if g.kind != "whole" or g.dims != 3 or g.unet.in_channels != 1 or g.unet.out_channels != 1:
            raise ValueError("the shape generator must be a 1-channel whole-volume 3-D prior")
        if self.code.space == "wavelet":
            d = self.detail
            if d is None or d.dims != 3 or d.in_channels != 1 or d.out_channels != DETAIL_BANDS:
                raise ValueError(f"a wavelet shape prior needs a 3-D detail UNet 1 -> {DETAIL_BANDS} channels")
        elif self.detail is not None:
            raise ValueError("a voxel-space shape prior has no detail network")

    def normalise(self, codes: Tensor) -> Tensor:
        mean, std = (torch.tensor(v, dtype=codes.dtype, device=codes.device).reshape(1, -1, 1, 1, 1)
                     for v in (self.mean, self.std))
        return (codes - mean[:, : codes.shape[1]]) / std[:, : codes.shape[1]]

    def denormalise(self, codes: Tensor) -> Tensor:
        mean, std = (torch.tensor(v, dtype=codes.dtype, device=codes.device).reshape(1, -1, 1, 1, 1)
                     for v in (self.mean, self.std))
        return codes * std[:, : codes.shape[1]] + mean[:, : codes.shape[1]]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ShapePriorConfig:
        return cls(**d)


class ShapePrior(nn.Module):
    """``generator``: EDM denoiser of the normalised coarse channel (B, 1, s, s, s) (the whole code in voxel space);
    ``detail``: normalised coarse (B, 1, s, s, s) -> normalised details (B, 7, s, s, s), or None."""

    def __init__(self, config: ShapePriorConfig) -> None:
        super().__init__()
        self.generator = build_prior(config.generator)
        self.detail = UNet(config.detail) if config.detail is not None else None

    def predict_detail(self, coarse: Tensor) -> Tensor:
        if self.detail is None:
            raise ValueError("this shape prior has no detail network")
        return self.detail(coarse, coarse.new_zeros(coarse.shape[0]))
