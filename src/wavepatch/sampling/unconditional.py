"""Unconditional samplers: functions of (denoise, x_init, sigmas) in the k-diffusion style.

``denoise(x, sigma) -> x_hat`` is any prior's denoiser; x is (B, C, H, W); sigmas is a decreasing 1-D tensor of
noise levels ending in 0 (``karras_sigmas``); start from ``x_init = sigmas[0] * z``. Every sampler returns the
final sample; NFE = number of denoiser calls, stated per function. VE process throughout: x_sigma = x0 + sigma z.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from wavepatch.sampling.steps import (
    Counted,
    corrector_step,
    euler_maruyama_step,
    langevin_step,
    positive_levels,
)
from wavepatch.types import Denoiser

Tensor = torch.Tensor


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  device: str | torch.device = "cpu") -> Tensor:
    """EDM noise levels: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0..n-1, then a final 0. Returns (n + 1,) float64 on ``device``."""
    if n < 1 or not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need n >= 1 and 0 < sigma_min <= sigma_max, got n={n}, {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sig, sig.new_zeros(1)]).to(device)


def geometric_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                     device: str | torch.device = "cpu") -> Tensor:
    """n geometrically spaced levels from sigma_max to sigma_min, then 0 (NCSN's schedule). (n + 1,) float64."""
    if n < 1 or not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need n >= 1 and 0 < sigma_min <= sigma_max, got n={n}, {sigma_min}, {sigma_max}")
    sig = torch.logspace(torch.log10(torch.tensor(sigma_max)), torch.log10(torch.tensor(sigma_min)), n,
                         dtype=torch.float64)
    return torch.cat([sig, sig.new_zeros(1)]).to(device)


def to_d(x: Tensor, sigma: float | Tensor, denoised: Tensor) -> Tensor:
    """dx/dsigma of the probability-flow ODE: (x - D(x, sigma)) / sigma."""
    return (x - denoised) / sigma


def _bar(n: int, progress: bool, desc: str):
    return tqdm(range(n), disable=not progress, desc=desc, leave=False)


def _level(sigma: Tensor) -> float | Tensor:
    """One row of a schedule as the denoiser takes it: a float (one level for the batch) or (B,) float32."""
    return float(sigma) if sigma.ndim == 0 else sigma.float()


def _per_image(level: float | Tensor, x: Tensor) -> float | Tensor:
    """``level`` broadcastable against x (B, C, *spatial)."""
    return level if isinstance(level, float) else level.reshape(-1, *[1] * (x.ndim - 1)).to(x.dtype)


@torch.no_grad()
def edm_heun(denoise: Denoiser, x: Tensor, sigmas: Tensor, progress: bool = False) -> Tensor:
    """EDM's deterministic 2nd-order Heun sampler of the probability-flow ODE (Karras et al. 2022, Alg. 1).

    sigmas: (L + 1,) levels shared by the batch, or (L + 1, B) one column per image (DLG finishes each image
    from its own level); the last step to sigma = 0 is an Euler step. NFE = 2 L - 1."""
    for i in _bar(len(sigmas) - 1, progress, "Heun"):
        s, s_next = _level(sigmas[i]), _level(sigmas[i + 1])
        h = _per_image(s_next, x) - _per_image(s, x)
        d = to_d(x, _per_image(s, x), denoise(x, s))
        x_next = x + h * d
        if bool(torch.as_tensor(s_next).gt(0).all()):
            d_next = to_d(x_next, _per_image(s_next, x), denoise(x_next, s_next))
            x_next = x + h * 0.5 * (d + d_next)
        x = x_next
    return x


@torch.no_grad()
def euler_maruyama(denoise: Denoiser, x: Tensor, sigmas: Tensor, generator: torch.Generator | None = None,
                   progress: bool = False) -> Tensor:
    """Reverse VE SDE, Euler-Maruyama: x <- x + (s^2 - s'^2) score + sqrt(s^2 - s'^2) z (Song et al. 2021).

    The last step (to sigma = 0) returns the denoiser's estimate. NFE = len(sigmas) - 1."""
    for i in _bar(len(sigmas) - 1, progress, "Euler-Maruyama"):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoise(x, s)
        if s_next == 0:
            x = denoised
            break
        x = euler_maruyama_step(x, (denoised - x) / s**2, s, s_next, generator)
    return x


@torch.no_grad()
def annealed_langevin(denoise: Denoiser, x: Tensor, sigmas: Tensor, n_inner: int = 3, eps: float = 0.5,
                      generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019): at each level sigma, ``n_inner`` steps
    x <- x + a score + sqrt(2 a) z with a = eps sigma^2 / 2 (so a score = eps/2 (D - x): at most a half step to
    the denoiser for eps <= 1). Ends with the denoiser's estimate at the smallest level.
    NFE = n_inner (len(sigmas) - 1) + 1."""
    levels = positive_levels(sigmas)
    for s in tqdm(levels, disable=not progress, desc="Langevin", leave=False):
        a = eps * s**2 / 2
        for _ in range(n_inner):
            x = langevin_step(x, (denoise(x, s) - x) / s**2, a, generator)
    return denoise(x, levels[-1])


@torch.no_grad()
def predictor_corrector(denoise: Denoiser, x: Tensor, sigmas: Tensor, snr: float = 0.16, n_corrector: int = 1,
                        generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Predictor-corrector (Song et al. 2021): reverse-SDE Euler-Maruyama predictor, then ``n_corrector``
    Langevin corrector steps at the new level (:func:`~wavepatch.sampling.steps.corrector_step`, score_sde's
    rule). NFE = (1 + n_corrector) (len(sigmas) - 2) + 1."""
    for i in _bar(len(sigmas) - 1, progress, "PC"):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoise(x, s)
        if s_next == 0:
            return denoised
        x = euler_maruyama_step(x, (denoised - x) / s**2, s, s_next, generator)
        for _ in range(n_corrector):
            x = corrector_step(x, (denoise(x, s_next) - x) / s_next**2, snr, generator)
    return x


SAMPLERS = ("heun", "euler", "langevin", "pc")


def sample(denoise: Denoiser, shape: tuple[int, ...], sampler: str = "heun", steps: int = 32,
           sigma_min: float = 0.002, sigma_max: float = 80.0, generator: torch.Generator | None = None,
           device: str | torch.device = "cpu", progress: bool = False, **options) -> tuple[Tensor, int]:
    """Draw samples of ``shape`` (B, C, H, W) with ``sampler`` over ``steps`` Karras levels; returns (x, NFE)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, device=device)
    noise = torch.randn(shape, generator=generator, device=generator.device if generator else "cpu")
    x = noise.to(device, torch.float32) * float(sigmas[0])
    counted = Counted(denoise)
    if sampler == "heun":
        x = edm_heun(counted, x, sigmas, progress=progress)
    elif sampler == "euler":
        x = euler_maruyama(counted, x, sigmas, generator, progress=progress)
    elif sampler == "langevin":
        x = annealed_langevin(counted, x, sigmas, generator=generator, progress=progress, **options)
    else:
        x = predictor_corrector(counted, x, sigmas, generator=generator, progress=progress, **options)
    return x, counted.nfe
