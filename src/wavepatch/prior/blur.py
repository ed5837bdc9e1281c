"""Blur diffusion (Lee, Chung, Kim & Ye 2022; the blurring diffusion of Hoogeboom & Salimans 2022), in EDM form.

Forward process, per coefficient k of the orthonormal 2-D DCT-II of the image x in [0, 1] data units:

    x_sigma[k] = d_sigma[k] x_0[k] + sigma z[k],    z ~ N(0, I),

d_sigma[k] = (1 - d_min) exp(-lambda_k s(sigma)^2 / 2) + d_min: the DCT eigenvalue of a Gaussian blur of std
s(sigma) pixels (the heat equation with reflecting boundaries, which the DCT-II diagonalises; lambda_k = pi^2
(k_1^2 / H^2 + k_2^2 / W^2), lambda_0 = 0 keeps the mean). The blur grows with the noise,
s(sigma) = s_max 4 sigma^2 / (1 + 4 sigma^2): this is the papers' variance-preserving process (alpha_t =
cos(pi t / 2), blur s_max sin^2(pi t / 2)) divided by 2 alpha_t and shifted, i.e. the same process in the
variance-exploding units of EDM (sigma = tan(pi t / 2) / 2 for data in [0, 1]). At sigma = 0 it is the
identity; as sigma grows, high frequencies vanish first, so the reverse process generates coarse to fine. Since
the DCT is orthonormal, white noise in the DCT domain is white noise in the image.

The network is an EDM-preconditioned UNet (:class:`~wavepatch.prior.precond.EDMDenoiser`) that estimates the
*unblurred* x_0 from x_sigma, trained with EDM's loss (ln sigma ~ N(p_mean, p_std^2), weight lambda(sigma)), which
is the v-prediction loss of the VP form. A whole-image EDM prior has the same tensors, so ``--init`` can start a
blur prior from one (only the deblurring has to be learned). Sampling: :mod:`wavepatch.sampling.blur`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import nn

from wavepatch.prior.precond import EDMDenoiser, edm_loss_weight
from wavepatch.prior.unet import UNet, UNetConfig
from wavepatch.types import JsonConfig

Tensor = torch.Tensor


@dataclass
class BlurConfig(JsonConfig):
    """A blur-diffusion prior: unet (1 in, 1 out channel), sigma_data (EDM), image_size (the size it generates),
    blur_max (s_max, pixels, the blur std as sigma -> infinity; default image_size / 8), d_min (the smallest DCT
    gain, keeps every frequency recoverable), window and modality as :class:`~wavepatch.prior.model.PriorConfig`."""

    kind: str = "blur"
    unet: UNetConfig = field(default_factory=UNetConfig)
    sigma_data: float = 0.5
    image_size: int = 128
    blur_max: float | None = None
    d_min: float = 1e-3
    window: tuple[float, float] | None = (-1000.0, 1000.0)
    modality: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if self.kind != "blur" or self.unet.dims != 2 or self.unet.in_channels != 1 or self.unet.out_channels != 1:
            raise ValueError("a blur-diffusion prior is a 2-D, one-channel network (kind 'blur')")
        self.image_size = int(self.image_size)
        if self.image_size % self.unet.divisor:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {self.unet.divisor}")
        if self.blur_max is None:
            self.blur_max = self.image_size / 8
        self.blur_max = float(self.blur_max)
        if not (math.isfinite(self.blur_max) and self.blur_max >= 0 and 0 < self.d_min < 1 and self.sigma_data > 0):
            raise ValueError(f"need blur_max >= 0, 0 < d_min < 1, sigma_data > 0; got {self.blur_max}, "
                             f"{self.d_min}, {self.sigma_data}")
        if self.window is not None:
            self.window = (float(self.window[0]), float(self.window[1]))

    @property
    def is_ct(self) -> bool:
        from wavepatch.prior.model import modality_is_ct

        return modality_is_ct(self.modality, self.window)


@lru_cache(maxsize=8)
def _dct_matrix_cached(n: int) -> Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * k * (2 * j + 1) / (2 * n)) * math.sqrt(2 / n)
    c[0] /= math.sqrt(2)
    return c


def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The orthonormal DCT-II matrix C (n, n): C[k, j] = a_k cos(pi k (2 j + 1) / (2 n)), C C^T = I."""
    return _dct_matrix_cached(n).to(device=device, dtype=dtype)


def dct2(x: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II over the last two axes (scipy.fft.dctn(x, norm='ortho'))."""
    ch, cw = dct_matrix(x.shape[-2], x.dtype, x.device), dct_matrix(x.shape[-1], x.dtype, x.device)
    return ch @ x @ cw.T


def idct2(u: Tensor) -> Tensor:
    """Inverse of :func:`dct2`."""
    ch, cw = dct_matrix(u.shape[-2], u.dtype, u.device), dct_matrix(u.shape[-1], u.dtype, u.device)
    return ch.T @ u @ cw


def frequencies(h: int, w: int, dtype=torch.float32, device=None) -> Tensor:
    """lambda_k = pi^2 (k_1^2 / h^2 + k_2^2 / w^2) (h, w): the heat-equation eigenvalue of DCT coefficient k
    (per pixel^2); a Gaussian blur of std s multiplies coefficient k by exp(-lambda_k s^2 / 2)."""
    k1 = torch.arange(h, dtype=torch.float64, device=device)[:, None] / h
    k2 = torch.arange(w, dtype=torch.float64, device=device)[None, :] / w
    return (math.pi**2 * (k1**2 + k2**2)).to(dtype)


def blur_std(sigma: Tensor, blur_max: float) -> Tensor:
    """s(sigma) = s_max 4 sigma^2 / (1 + 4 sigma^2), pixels."""
    return blur_max * 4 * sigma**2 / (1 + 4 * sigma**2)


def gains(sigma: Tensor, cfg: BlurConfig, h: int, w: int) -> Tensor:
    """d_sigma[k], (B, 1, h, w) for sigma (B,) (float32; computed in float64)."""
    s = blur_std(sigma.double().reshape(-1, 1, 1, 1), cfg.blur_max)
    lam = frequencies(h, w, torch.float64, sigma.device)
    return ((1 - cfg.d_min) * torch.exp(-lam * s**2 / 2) + cfg.d_min).float()  # 1 at s = 0 and for the mean


def blur(x0: Tensor, sigma: Tensor, cfg: BlurConfig) -> Tensor:
    """The mean of the forward process, IDCT(d_sigma DCT(x0)), for x0 (B, 1, H, W) and sigma (B,)."""
    return idct2(gains(sigma, cfg, *x0.shape[-2:]) * dct2(x0))


def diffuse(x0: Tensor, sigma: Tensor, z: Tensor, cfg: BlurConfig) -> Tensor:
    """x_sigma = IDCT(d_sigma DCT(x0)) + sigma z for x0, z (B, 1, H, W) and sigma (B,)."""
    return blur(x0, sigma, cfg) + sigma.reshape(-1, 1, 1, 1).to(x0.dtype) * z


class BlurDiffusion(EDMDenoiser):
    """x0_hat = D(x_sigma, sigma): the EDM-preconditioned UNet; its tensors are named as a whole-image prior's."""

    def __init__(self, config: BlurConfig) -> None:
        super().__init__(UNet(config.unet), sigma_data=config.sigma_data)
        self.config = config


def blur_loss(model: nn.Module, x0: Tensor, generator: torch.Generator, p_mean: float, p_std: float,
              _extra: Tensor | None = None) -> Tensor:
    """EDM's loss for the blurred process: mean of lambda(sigma) |D(x_sigma, sigma) - x0|^2, ln sigma ~
    N(p_mean, p_std^2), x0 (B, 1, H, W) in data units. Same call as :func:`~wavepatch.prior.precond.edm_loss`."""
    b = x0.shape[0]
    sigma = (torch.randn(b, generator=generator, device=generator.device) * p_std + p_mean).exp().to(x0.device)
    z = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
    inner = getattr(model, "module", model)  # DDP wraps the model
    denoised = model(diffuse(x0, sigma, z, inner.config), sigma)
    weight = edm_loss_weight(sigma, inner.config.sigma_data)
    return (weight * ((denoised - x0) ** 2).mean(dim=(1, 2, 3))).mean()
