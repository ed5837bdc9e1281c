"""EDM preconditioning (Karras et al. 2022): D(x, sigma) = c_skip x + c_out F(c_in x, c_noise).

With it the network F always sees unit-variance input and predicts a unit-variance target, at every noise
level. The denoiser D is the one interface between networks and samplers; by Tweedie's formula the score is
(D(x, sigma) - x) / sigma**2.
"""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


def edm_scalings(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) for noise level(s) ``sigma`` (any shape, > 0) and data std ``sigma_data``."""
    s2, d2 = sigma**2, sigma_data**2
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1 / (s2 + d2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2: makes the effective target unit variance."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(model: nn.Module, x0: Tensor, generator: torch.Generator, p_mean: float, p_std: float,
             extra: Tensor | None = None) -> Tensor:
    """EDM denoising score matching loss on x0 (B, C, *spatial): the mean of lambda(sigma) ||D(x0 + sigma z) - x0||^2.

    ``model`` is an ``EDMDenoiser`` (or one wrapped by DistributedDataParallel); ln sigma ~ N(p_mean, p_std^2)
    per item; the squared error is averaged over all non-batch dims (channels, pixels or voxels); ``extra``:
    conditioning channels passed to the model (patch positions).
    """
    b = x0.shape[0]
    sigma = (torch.randn(b, generator=generator, device=generator.device) * p_std + p_mean).exp().to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
    denoised = model(x0 + sigma.reshape(-1, *[1] * (x0.ndim - 1)) * noise, sigma, extra)
    weight = edm_loss_weight(sigma, getattr(model, "module", model).sigma_data)  # DDP wraps the model
    return (weight * ((denoised - x0) ** 2).mean(dim=tuple(range(1, x0.ndim)))).mean()


def score_from_denoised(x: Tensor, denoised: Tensor, sigma: Tensor | float) -> Tensor:
    """Tweedie: grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return (denoised - x) / _per_item(sigma, x) ** 2


def _per_item(sigma: Tensor, x: Tensor) -> Tensor:
    """Broadcast a scalar or (B,) sigma against x of shape (B, ...)."""
    sigma = sigma.to(dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


class EDMDenoiser(nn.Module):
    """D(x, sigma, extra) around a network ``net(input, c_noise)``.

    x: (B, C, H, W) noisy image in data units; sigma: float, 0-d or (B,) tensor (> 0);
    extra: optional (B, E, H, W) conditioning channels (patch positions), concatenated to c_in x unscaled.
    Returns the denoised estimate (B, C, H, W), same dtype as x.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x: Tensor, sigma: Tensor | float, extra: Tensor | None = None) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a scalar or have shape ({x.shape[0]},), got {tuple(sigma.shape)}")
        c_skip, c_out, c_in, c_noise = (_per_item(c, x) if i < 3 else c for i, c in
                                        enumerate(edm_scalings(sigma, self.sigma_data)))
        inp = c_in * x
        if extra is not None:
            inp = torch.cat([inp, extra.to(inp.dtype)], dim=1)
        return c_skip * x + c_out * self.net(inp, c_noise).to(x.dtype)
