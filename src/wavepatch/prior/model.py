"""Score priors: their config, construction, and the denoiser callables the samplers use.

A prior is an ``EDMDenoiser`` (preconditioned UNet) plus a ``PriorConfig`` saying what kind it is:
- ``whole``: the network sees the whole image (size a multiple of the UNet divisor; other sizes are zero-padded);
- ``patch``: the network sees P x P patches and 2 position channels (PaDIS); any image size works.
``make_denoiser`` turns it into ``denoise(x, sigma) -> x_hat`` for x of shape (B, 1, N, N) in [0, 1] data units.
The third kind, ``wavelet`` (WSGM: one network per wavelet scale), has its own config and module in
:mod:`wavepatch.prior.wavelet` and is no single denoiser; ``load_prior`` refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.nn import functional as F

from wavepatch.prior.patches import denoise_fixed_grid, denoise_overlapping, denoise_random_shift
from wavepatch.prior.precond import EDMDenoiser
from wavepatch.prior.unet import UNet, UNetConfig

Tensor = torch.Tensor
Denoiser = Callable[[Tensor, Tensor | float], Tensor]

PRIOR_KINDS = ("whole", "patch")
PATCH_MODES = ("padis", "stitch", "average")


@dataclass
class PriorConfig:
    """What a checkpoint holds besides weights.

    kind: 'whole' or 'patch'. unet: the architecture (in_channels includes the 2 position channels of a patch
    prior). sigma_data: EDM's data standard deviation (data in [0, 1]). image_size: side of the training
    images (the size a whole-image prior generates by default). patch_size: default inference patch side of a
    patch prior. window: (lo, hi) window the training data were mapped to [0, 1] with (HU for CT), or None
    (min-max). modality: 'ct', 'mri' or 'other'; None (older checkpoints) means CT when the window reaches
    below -500 (an HU window), else 'other'. Only CT priors write samples in HU (NIfTI, DICOM).
    """

    kind: str = "patch"
    unet: UNetConfig = field(default_factory=UNetConfig)
    sigma_data: float = 0.5
    image_size: int = 128
    patch_size: int = 32
    window: tuple[float, float] | None = (-1000.0, 1000.0)
    modality: str | None = None

    def __post_init__(self) -> None:
        if self.modality not in (None, "ct", "mri", "other"):
            raise ValueError(f"modality must be ct, mri or other, got {self.modality!r}")
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if self.window is not None:
            self.window = (float(self.window[0]), float(self.window[1]))
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"prior kind must be one of {PRIOR_KINDS}, got {self.kind!r}")
        expected_in = self.unet.out_channels + (2 if self.kind == "patch" else 0)
        if self.unet.in_channels != expected_in:
            raise ValueError(f"a {self.kind} prior needs unet.in_channels = {expected_in}, got {self.unet.in_channels}")
        if self.kind == "patch" and self.patch_size % self.unet.divisor:
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of {self.unet.divisor}")

    @property
    def is_ct(self) -> bool:
        return modality_is_ct(self.modality, self.window)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorConfig:
        return cls(**d)


def modality_is_ct(modality: str | None, window: tuple[float, float] | None) -> bool:
    """Whether a prior is a CT prior: its modality says so, or (modality None, older checkpoints) its window
    reaches below -500 (an HU window)."""
    if modality is not None:
        return modality == "ct"
    return window is not None and window[0] <= -500


def build_prior(config: PriorConfig) -> EDMDenoiser:
    """A freshly initialised preconditioned network for ``config``."""
    return EDMDenoiser(UNet(config.unet), sigma_data=config.sigma_data)


def make_denoiser(model: EDMDenoiser, config: PriorConfig, mode: str = "padis", patch_size: int | None = None,
                  generator: torch.Generator | None = None, chunk: int | None = 256) -> Denoiser:
    """``denoise(x, sigma)`` for images x (B, 1, N, N); sigma a float, 0-d or (B,) tensor.

    For a patch prior ``mode`` picks how patches make the image: 'padis' (random grid shift per call),
    'stitch' (fixed grid) or 'average' (overlapping patches averaged); ``patch_size`` overrides the config's;
    ``generator`` drives the shifts and the border noise; ``chunk`` caps patches per network call. A whole-image
    prior ignores these.
    """
    if config.kind == "whole":
        def denoise_whole(x: Tensor, sigma: Tensor | float) -> Tensor:
            d = config.unet.divisor
            h, w = x.shape[-2:]
            ph, pw = (-h) % d, (-w) % d
            if ph or pw:  # zero (air) padding to a size the UNet takes; cropped back after
                out = model(F.pad(x, (0, pw, 0, ph)), sigma)
                return out[..., :h, :w]
            return model(x, sigma)
        return denoise_whole

    p = int(patch_size or config.patch_size)
    if p % config.unet.divisor:
        raise ValueError(f"patch size {p} must be a multiple of {config.unet.divisor} for this prior")
    if mode not in PATCH_MODES:
        raise ValueError(f"patch mode must be one of {PATCH_MODES}, got {mode!r}")

    def net(patches: Tensor, sigma: Tensor, pos: Tensor) -> Tensor:
        return model(patches, sigma, extra=pos)

    if mode == "padis":
        return lambda x, sigma: denoise_random_shift(net, x, sigma, p, generator, chunk)
    if mode == "stitch":
        return lambda x, sigma: denoise_fixed_grid(net, x, sigma, p, generator, chunk)
    return lambda x, sigma: denoise_overlapping(net, x, sigma, p, overlap=max(1, p // 4), generator=generator,
                                                chunk=chunk)
