"""Posterior samplers for inverse problems: functions of (denoise, fidelity, x_init, sigmas, *, generator, callback).

``denoise(x, sigma)`` is any prior's denoiser; ``fidelity`` the measurement's data term
(:mod:`wavepatch.fidelity`: residual, grad, prox, project, annealed_grad, scale); ``sigmas`` a decreasing
schedule ending in 0 (``karras_sigmas`` / ``geometric_sigmas``); x_init is ``sigmas[0] * z`` for a cold start or
a warm start (``warm_start``); ``callback`` gets the step state once per level (:mod:`wavepatch.sampling.steps`).
Each returns the final estimate, shaped like x_init. VE process x_sigma = x0 + sigma z throughout.

Data steps are dimensionless: a gradient step of size ``zeta`` is divided by ``fidelity.scale`` and moves the
image by about zeta per pixel (RMS), whatever the operator's scale and the image size.

Which need the network's gradient: DPS, MCG, PaDIS (backpropagate through the denoiser). Which do not:
annealed Langevin, predictor-corrector, DDNM / DDS (data consistency on the image itself).
"""

from __future__ import annotations

import torch

from wavepatch.fidelity import DataFidelity
from wavepatch.sampling.steps import (
    Callback,
    Counted,
    NoiseFn,
    ancestral_step,
    corrector_step,
    langevin_step,
    level_pairs,
    positive_levels,
    randn_like,
    report,
)
from wavepatch.types import Denoiser

Tensor = torch.Tensor


def warm_start(x_init: Tensor, sigma_start: float, generator: torch.Generator | None = None,
               noise: NoiseFn = randn_like) -> Tensor:
    """Fast mode: start the reverse process at noise level ``sigma_start`` from a (classical) estimate;
    ``noise(x, generator)`` draws the standard normal part."""
    return x_init + sigma_start * noise(x_init, generator)


def _denoise_with_grad(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """(D(x), grad_x r(D(x))) with r = sqrt(residual) (the un-squared norm DPS' code differentiates) and the
    gradient through the network; x is not modified."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        d = denoise(xg, sigma)
        r = fidelity.residual(d).sqrt()
        (g,) = torch.autograd.grad(r.sum(), xg)
    return d.detach(), g


def dps(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, zeta: float = 0.1,
        generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """Diffusion posterior sampling (Chung et al. 2023) on the VE reverse SDE.

    Each level: x0 = D(x, s); ancestral step to s' (DDPM's step as in DPS' code); then the data step
    x <- x - (zeta / scale) grad_x r(x0(x)) (gradient through the network, r = sqrt(residual)). The last step
    returns x0 with the data step. NFE = len(sigmas) - 1 (each with a backward)."""
    denoise = Counted(denoise)
    pairs = level_pairs(sigmas)
    for i, (s, s_next) in enumerate(pairs):
        x0, g = _denoise_with_grad(denoise, fidelity, x, s)
        if s_next == 0:
            x = x0 - zeta / fidelity.scale * g
        else:
            x = ancestral_step(x, x0, s, s_next, generator) - zeta / fidelity.scale * g
        report(callback, i, len(pairs), s, x, x0, denoise)
        if s_next == 0:
            break
    return x.detach()


def mcg(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, zeta: float = 0.1, cg: int = 10,
        generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """Manifold-constrained gradient (Chung et al. 2022): a DPS step, then the projection onto the noised
    measurement set x <- x + A^+(y + s' A z - A x) (``fidelity.pinv``: exact for inpainting and MRI, ``cg``
    CGLS iterations otherwise). NFE = len(sigmas) - 1."""
    denoise = Counted(denoise)
    op, y = fidelity.op, fidelity.y
    pairs = level_pairs(sigmas)
    for i, (s, s_next) in enumerate(pairs):
        x0, g = _denoise_with_grad(denoise, fidelity, x, s)
        if s_next == 0:
            x = x0 - zeta / fidelity.scale * g
            x = x + fidelity.pinv(y - op.A(x), cg)
        else:
            x = ancestral_step(x, x0, s, s_next, generator) - zeta / fidelity.scale * g
            with torch.no_grad():
                x = x + fidelity.pinv(y + s_next * op.A(randn_like(x, generator)) - op.A(x), cg)
        report(callback, i, len(pairs), s, x, x0, denoise)
        if s_next == 0:
            break
    return x.detach()


def padis(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, n_inner: int = 5,
          zeta: float = 0.1, eps: float = 0.5, generator: torch.Generator | None = None,
          callback: Callback | None = None) -> Tensor:
    """PaDIS (Hu et al. 2024), the talk's algorithm, for a patch prior whose ``denoise`` draws a new random grid
    shift at every call. For each level sigma > 0 and each of ``n_inner`` iterations:
        d = D(x, sigma); s = (d - x)/sigma^2;
        x <- x - (zeta / scale) grad_x ||A d(x) - y||      (= zeta_t grad ||A d - y||^2, zeta_t ~ 1/||A d - y||);
        x <- x + (alpha/2) s + sqrt(alpha) z, alpha = eps sigma^2   (no noise on the very last iteration).
    Returns the last denoised estimate d with its data step. NFE = n_inner * (number of sigmas > 0)."""
    denoise = Counted(denoise)
    levels = positive_levels(sigmas)
    d, g = x, torch.zeros_like(x)
    for li, s in enumerate(levels):
        for k in range(n_inner):
            d, g = _denoise_with_grad(denoise, fidelity, x, s)
            alpha = eps * s**2
            last = li == len(levels) - 1 and k == n_inner - 1
            x = x - zeta / fidelity.scale * g + alpha / 2 * (d - x) / s**2
            if not last:
                x = x + alpha**0.5 * randn_like(x, generator)
        report(callback, li, len(levels), s, x, d, denoise)
    return (d - zeta / fidelity.scale * g).detach()


def _posterior_score(denoised: Tensor, x: Tensor, fidelity: DataFidelity, s: float) -> Tensor:
    """Prior score (D - x)/s^2 plus the likelihood gradient of an estimate with noise level s."""
    return (denoised - x) / s**2 + fidelity.annealed_grad(x, s)


@torch.no_grad()
def langevin(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, n_inner: int = 3,
             eps: float = 0.5, generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """Annealed Langevin dynamics on the posterior: at each level, ``n_inner`` steps
    x <- x + a (score_prior + grad log N(y; A x, V + sigma^2 ||A||^2 I)) + sqrt(2 a) z, a = eps sigma^2 / 2
    (``fidelity.annealed_grad``; V = the measurement's noise variance, per bin for Poisson data). The
    likelihood's variance is inflated by the noise level so early steps do not over-fit; at small sigma it is the
    true (Gaussian or count-weighted) likelihood. Ends with D(x, sigma_min). NFE = n_inner * (sigmas > 0) + 1."""
    denoise = Counted(denoise)
    levels = positive_levels(sigmas)
    d = None
    for i, s in enumerate(levels):
        a = eps * s**2 / 2
        for _ in range(n_inner):
            d = denoise(x, s)
            x = langevin_step(x, _posterior_score(d, x, fidelity, s), a, generator)
        report(callback, i, len(levels), s, x, d, denoise)
    return denoise(x, levels[-1])


@torch.no_grad()
def predictor_corrector(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, snr: float = 0.16,
                        n_corrector: int = 1, generator: torch.Generator | None = None,
                        callback: Callback | None = None) -> Tensor:
    """Predictor-corrector (Song et al. 2021) on the posterior: ancestral predictor with the posterior score
    (prior score + inflated likelihood gradient as in ``langevin``), then ``n_corrector`` Langevin correctors
    (:func:`~wavepatch.sampling.steps.corrector_step`). NFE = (1 + n_corrector)(len(sigmas) - 2) + 1."""
    denoise = Counted(denoise)
    pairs = level_pairs(sigmas)
    for i, (s, s_next) in enumerate(pairs):
        denoised = denoise(x, s)
        if s_next == 0:
            report(callback, i, len(pairs), s, denoised, denoised, denoise)
            return denoised
        score = _posterior_score(denoised, x, fidelity, s)
        x = ancestral_step(x, x + s**2 * score, s, s_next, generator)
        for _ in range(n_corrector):
            x = corrector_step(x, _posterior_score(denoise(x, s_next), x, fidelity, s_next), snr, generator)
        report(callback, i, len(pairs), s, x, denoised, denoise)
    return x


def data_consistency(fidelity: DataFidelity, x0: Tensor, sigma: float, cg: int = 10) -> Tensor:
    """The data step of DDNM / DDS on a denoised estimate x0 whose error std is ~sigma per pixel. Noiseless data:
    the projection x0 - A^+(A x0 - y). Noisy data: the MAP combination of estimate and measurement,
    ``fidelity.prox(x0, 1 / sigma^2)`` (DiffPIR's data step; fitting noisy data exactly at every level leaves
    the final image as noisy as a least-squares reconstruction)."""
    if fidelity.noiseless:
        return fidelity.project(x0, cg)
    return fidelity.prox(x0, 1.0 / sigma**2, cg)


@torch.no_grad()
def ddnm(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, eta: float = 0.85, cg: int = 10,
         generator: torch.Generator | None = None, callback: Callback | None = None,
         noise: NoiseFn = randn_like) -> Tensor:
    """DDNM (Wang et al. 2023): the range-space part of the Tweedie estimate replaced by the measurement
    (:func:`data_consistency`), then a DDIM-type step x <- x0 + s' (sqrt(1 - eta^2) eps_hat + eta z) with
    eps_hat = (x - D(x))/s. No network gradient. With a random-shift patch denoiser, a warm start and CG data
    steps this is PaDIS' fast mode (the decomposed diffusion sampler of Chung et al. 2024). NFE = len(sigmas) - 1.
    ``noise(x, generator)`` draws z (:func:`~wavepatch.sampling.steps.slerp_slice_noise`: ISCS across slices)."""
    denoise = Counted(denoise)
    pairs = level_pairs(sigmas)
    for i, (s, s_next) in enumerate(pairs):
        x0 = denoise(x, s)
        eps_hat = (x - x0) / s
        x0 = data_consistency(fidelity, x0, s, cg)
        if s_next == 0:
            report(callback, i, len(pairs), s, x0, x0, denoise)
            return x0
        x = x0 + s_next * ((1 - eta**2) ** 0.5 * eps_hat + eta * noise(x, generator))
        report(callback, i, len(pairs), s, x, x0, denoise)
    return x
