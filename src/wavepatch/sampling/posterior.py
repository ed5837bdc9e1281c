"""Posterior samplers for inverse problems y = A x0 + noise, with any prior's ``denoise(x, sigma)``.

Each sampler is a function of (denoise, op, y or likelihood, x_init, sigmas, ..., generator) returning the final
estimate (B, C, H, W); ``sigmas`` is a decreasing schedule ending in 0 (``karras_sigmas`` /
``geometric_sigmas``), x_init is ``sigmas[0] * z`` for a cold start or a warm start (``warm_start``). VE
process x_sigma = x0 + sigma z throughout.

Likelihoods (``gaussian_likelihood``, ``poisson_likelihood``) give a per-item residual r(x) >= 0 with
r^2 = -2 log p(y | x) + const (Gaussian noise of unit std, Poisson deviance), and a ``scale`` = ||A|| / sqrt(n)
(n = pixels per image) that makes step sizes dimensionless: a data step of size ``zeta`` moves the image by at
most about zeta per pixel (RMS), whatever the operator's scale and the image size.

Which need the network's gradient: DPS, MCG, PaDIS (backpropagate through the denoiser). Which do not:
annealed Langevin, predictor-corrector, DDNM (data consistency on the image itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from wavepatch.physics.base import LinearOperator
from wavepatch.sampling.unconditional import randn_like

Tensor = torch.Tensor
Denoiser = Callable[[Tensor, Tensor | float], Tensor]


@dataclass
class Likelihood:
    """residual(x) -> (B,) with residual^2 = -2 log p(y | x) + const (unit noise); scale: ||A|| / sqrt(pixels)
    (normalises data steps, see the module docstring); name: 'gaussian' or 'poisson'."""

    residual: Callable[[Tensor], Tensor]
    scale: float
    name: str


def gaussian_likelihood(op: LinearOperator, y: Tensor) -> Likelihood:
    """r(x) = ||A x - y|| (the un-squared norm DPS differentiates)."""
    def residual(x: Tensor) -> Tensor:
        d = op.A(x) - y
        return (d.abs() ** 2 if d.is_complex() else d**2).flatten(1).sum(dim=1).sqrt()

    return Likelihood(residual, float(op.norm()) / _sqrt_pixels(op), "gaussian")


def postlog_counts(y_postlog: Tensor, i0: float, mu: float) -> Tensor:
    """Photon counts c = I0 exp(-mu y) behind post-log CT data y (operator units, i.e. line integrals / mu)."""
    return i0 * torch.exp(-mu * y_postlog)


def poisson_likelihood(op: LinearOperator, y_postlog: Tensor, i0: float, mu: float) -> Likelihood:
    """Low-dose CT: photon counts c = I0 exp(-mu y) recovered from post-log data y (operator units); expected
    counts lambda(x) = I0 exp(-mu A x). r(x) = sqrt(deviance) with deviance = 2 sum(lambda - c + c log(c / lambda)),
    the exact Poisson negative log-likelihood up to a constant (0 at lambda = c)."""
    counts = postlog_counts(y_postlog, i0, mu)

    def residual(x: Tensor) -> Tensor:
        log_lam = torch.log(torch.as_tensor(i0, dtype=x.dtype)) - mu * op.A(x)
        lam = log_lam.exp()
        dev = 2 * (lam - counts + counts * (torch.log(counts.clamp_min(1e-12)) - log_lam))
        return dev.flatten(1).sum(dim=1).clamp_min(0).sqrt()

    # d r / d(Ax) ~ mu sqrt(c) per bin: the operator seen through the counts
    return Likelihood(residual, float(op.norm()) * mu * float(counts.mean().sqrt()) / _sqrt_pixels(op), "poisson")


def _sqrt_pixels(op: LinearOperator) -> float:
    n = 1
    for d in op.image_shape:
        n *= int(d)
    return float(n) ** 0.5


def poisson_nll(op: LinearOperator, y_postlog: Tensor, i0: float, mu: float, x: Tensor) -> Tensor:
    """-log p(counts | x) up to a constant: sum(lambda(x) - c log lambda(x)); (B,)."""
    counts = postlog_counts(y_postlog, i0, mu)
    log_lam = torch.log(torch.as_tensor(i0, dtype=x.dtype)) - mu * op.A(x)
    return (log_lam.exp() - counts * log_lam).flatten(1).sum(dim=1)


def warm_start(x_init: Tensor, sigma_start: float, generator: torch.Generator | None = None) -> Tensor:
    """Fast mode: start the reverse process at noise level ``sigma_start`` from a (classical) estimate."""
    return x_init + sigma_start * randn_like(x_init, generator)


def _denoise_with_grad(denoise: Denoiser, lik: Likelihood, x: Tensor, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
    """(D(x), r(D(x)), grad_x r(D(x))) with the gradient through the network; x is not modified."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        d = denoise(xg, sigma)
        r = lik.residual(d)
        (g,) = torch.autograd.grad(r.sum(), xg)
    return d.detach(), r.detach(), g


def ancestral_step(x: Tensor, x0: Tensor, s: float, s_next: float, generator: torch.Generator | None) -> Tensor:
    """Sample x_{s'} from the VE forward process' posterior given x_s = x and the clean estimate x0:
    x0 + (s'^2/s^2)(x - x0) + s' sqrt(1 - s'^2/s^2) z, so the result has noise level exactly s' however large the
    step (an Euler-Maruyama step to s' << s leaves noise of level ~s). It is the reverse SDE step of DDPM, or
    DDIM with eta = 1."""
    r2 = (s_next / s) ** 2
    return x0 + r2 * (x - x0) + s_next * (1 - r2) ** 0.5 * randn_like(x, generator)


def _levels(sigmas: Tensor) -> list[tuple[float, float]]:
    return [(float(sigmas[i]), float(sigmas[i + 1])) for i in range(len(sigmas) - 1)]


def dps(denoise: Denoiser, lik: Likelihood, x: Tensor, sigmas: Tensor, zeta: float = 0.5,
        generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Diffusion posterior sampling (Chung et al. 2023) on the VE reverse SDE.

    Each level: x0 = D(x, s); ancestral step to s' (:func:`ancestral_step`, DDPM's step as in DPS' code); then the
    data step
    x <- x - (zeta / scale) grad_x r(x0(x)) (gradient through the network, r = un-squared residual as in the
    official code). The last step returns x0 with the data step. NFE = len(sigmas) - 1 (each with a backward)."""
    for s, s_next in tqdm(_levels(sigmas), disable=not progress, desc="DPS", leave=False):
        x0, _, g = _denoise_with_grad(denoise, lik, x, s)
        if s_next == 0:
            x = x0 - zeta / lik.scale * g
            break
        x = ancestral_step(x, x0, s, s_next, generator) - zeta / lik.scale * g
    return x.detach()


def mcg(denoise: Denoiser, lik: Likelihood, op: LinearOperator, y: Tensor, x: Tensor, sigmas: Tensor,
        zeta: float = 0.5, pinv: Callable[[Tensor], Tensor] | None = None,
        generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Manifold-constrained gradient (Chung et al. 2022): a DPS step, then the projection onto the noisy
    measurement set x <- x + A^+(y + s' A z - A x) (``pinv`` defaults to ``op.A_dagger``; exact for inpainting
    and MRI, a least-squares step for CT). NFE = len(sigmas) - 1."""
    pinv = pinv or op.A_dagger
    for s, s_next in tqdm(_levels(sigmas), disable=not progress, desc="MCG", leave=False):
        x0, _, g = _denoise_with_grad(denoise, lik, x, s)
        if s_next == 0:
            x = x0 - zeta / lik.scale * g
            x = x + pinv(y - op.A(x))
            break
        x = ancestral_step(x, x0, s, s_next, generator) - zeta / lik.scale * g
        with torch.no_grad():
            x = x + pinv(y + s_next * op.A(randn_like(x, generator)) - op.A(x))
    return x.detach()


def padis(denoise: Denoiser, lik: Likelihood, x: Tensor, sigmas: Tensor, n_inner: int = 10, zeta: float = 0.5,
          eps: float = 0.5, generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """PaDIS (Hu et al. 2024), the talk's algorithm, for a patch prior whose ``denoise`` draws a new random grid
    shift at every call. For each level sigma > 0 and each of ``n_inner`` iterations:
        d = D(x, sigma); s = (d - x)/sigma^2;
        x <- x - (zeta / scale) grad_x ||A d(x) - y||      (= zeta_t grad ||A d - y||^2, zeta_t ~ 1/||A d - y||);
        x <- x + (alpha/2) s + sqrt(alpha) z, alpha = eps sigma^2   (no noise on the very last iteration).
    Returns the last denoised estimate d with its data step. NFE = n_inner * (number of sigmas > 0)."""
    levels = [float(s) for s in sigmas if s > 0]
    d = x
    for li, s in enumerate(tqdm(levels, disable=not progress, desc="PaDIS", leave=False)):
        for k in range(n_inner):
            d, _, g = _denoise_with_grad(denoise, lik, x, s)
            alpha = eps * s**2
            last = li == len(levels) - 1 and k == n_inner - 1
            x = x - zeta / lik.scale * g + alpha / 2 * (d - x) / s**2
            if not last:
                x = x + alpha**0.5 * randn_like(x, generator)
    return (d - zeta / lik.scale * g).detach()


def _likelihood_grad(op: LinearOperator, y: Tensor, x: Tensor, weight: float) -> Tensor:
    """grad_x log N(y; A x, weight I) = A^T (y - A x) / weight."""
    return op.A_adjoint(y - op.A(x)) / weight


@torch.no_grad()
def langevin(denoise: Denoiser, op: LinearOperator, y: Tensor, x: Tensor, sigmas: Tensor, noise_std: float = 0.0,
             n_inner: int = 3, eps: float = 0.5, generator: torch.Generator | None = None,
             progress: bool = False) -> Tensor:
    """Annealed Langevin dynamics on the posterior: at each level, ``n_inner`` steps of
    x <- x + a (score_prior + grad log N(y; A x, (noise_std^2 + sigma^2 ||A||^2) I)) + sqrt(2 a) z, a = eps sigma^2/2.
    The likelihood's variance is inflated by the noise level so early steps do not over-fit; at small sigma it
    is the true likelihood, so the last levels sample the exact posterior (of the prior at sigma_min).
    Ends with D(x, sigma_min). NFE = n_inner * (number of sigmas > 0) + 1."""
    levels = [float(s) for s in sigmas if s > 0]
    lip = float(op.norm()) ** 2
    for s in tqdm(levels, disable=not progress, desc="Langevin", leave=False):
        a = eps * s**2 / 2
        weight = noise_std**2 + s**2 * lip
        for _ in range(n_inner):
            score = (denoise(x, s) - x) / s**2 + _likelihood_grad(op, y, x, weight)
            x = x + a * score + (2 * a) ** 0.5 * randn_like(x, generator)
    return denoise(x, levels[-1])


@torch.no_grad()
def predictor_corrector(denoise: Denoiser, op: LinearOperator, y: Tensor, x: Tensor, sigmas: Tensor,
                        noise_std: float = 0.0, snr: float = 0.16, n_corrector: int = 1,
                        generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """Predictor-corrector (Song et al. 2021) on the posterior: reverse-SDE (ancestral) predictor with the
    posterior score (prior score + inflated likelihood gradient as in ``langevin``), then ``n_corrector``
    Langevin correctors with score_sde's step 2 (snr ||z|| / ||score||)^2 (batch-mean norms).
    NFE = (1 + n_corrector)(len(sigmas) - 2) + 1."""
    lip = float(op.norm()) ** 2
    for s, s_next in tqdm(_levels(sigmas), disable=not progress, desc="PC", leave=False):
        denoised = denoise(x, s)
        if s_next == 0:
            return denoised
        score = (denoised - x) / s**2 + _likelihood_grad(op, y, x, noise_std**2 + s**2 * lip)
        x = ancestral_step(x, x + s**2 * score, s, s_next, generator)
        for _ in range(n_corrector):
            score = (denoise(x, s_next) - x) / s_next**2 + _likelihood_grad(op, y, x, noise_std**2 + s_next**2 * lip)
            z = randn_like(x, generator)
            ratio = z.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
            step = float(2 * (snr * ratio) ** 2)
            x = x + step * score + (2 * step) ** 0.5 * z
    return x


@torch.no_grad()
def ddnm(denoise: Denoiser, op: LinearOperator, y: Tensor, x: Tensor, sigmas: Tensor, eta: float = 0.85,
         pinv: Callable[[Tensor], Tensor] | None = None, generator: torch.Generator | None = None,
         progress: bool = False, data_step: Callable[[Tensor, float], Tensor] | None = None) -> Tensor:
    """DDNM (Wang et al. 2023): replace the range-space part of the Tweedie estimate by the measurement,
    x0 <- x0 - A^+(A x0 - y), then a DDIM-type step x <- x0 + s' (sqrt(1 - eta^2) eps_hat + eta z) with
    eps_hat = (x - D(x))/s. No network gradient. ``pinv`` defaults to ``op.A_dagger``. NFE = len(sigmas) - 1.

    data_step: instead of the projection, x0 <- data_step(x0, s) (e.g. :func:`proximal_data_step` for noisy
    measurements, which must not be fitted exactly)."""
    pinv = pinv or op.A_dagger
    for s, s_next in tqdm(_levels(sigmas), disable=not progress, desc="DDNM", leave=False):
        x0 = denoise(x, s)
        eps_hat = (x - x0) / s
        x0 = data_step(x0, s) if data_step is not None else x0 - pinv(op.A(x0) - y)
        if s_next == 0:
            return x0
        x = x0 + s_next * ((1 - eta**2) ** 0.5 * eps_hat + eta * randn_like(x, generator))
    return x


class _RowWeighted(LinearOperator):
    """diag(sqrt_w) A, for weighted least squares by CGLS (``sqrt_w`` broadcasts against A's output)."""

    def __init__(self, op: LinearOperator, sqrt_w: Tensor) -> None:
        self.op, self.sqrt_w, self.image_shape = op, sqrt_w, op.image_shape

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.sqrt_w * self.op.A(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.op.A_adjoint(self.sqrt_w * y)

    @property
    def device(self) -> torch.device:
        return self.op.device


def proximal_data_step(op: LinearOperator, y: Tensor, x0: Tensor, rho: float, weights: Tensor | None = None,
                       n_iter: int = 10) -> Tensor:
    """argmin_x ||W^(1/2) (A x - y)||^2 + rho ||x - x0||^2, by ``n_iter`` CGLS iterations on the correction
    d = x - x0 started at 0 (the measurement pulls the estimate only as far as its noise allows).

    With W = I / sigma_y^2 (white measurement noise) and rho = 1 / r^2 for an estimate x0 with error std r per
    pixel, this is the MAP combination of the two (DiffPIR's data step, Zhu et al. 2023): rho = sigma_y^2 / r^2
    with W = I. weights: W's diagonal, shaped like y (e.g. post-log CT: the photon counts times mu^2), or None
    for W = I. x0 (B, ...) image, y (B, ...) measurement; returns (B, ...) like x0."""
    from wavepatch.recon.least_squares import cgls

    residual = y - op.A(x0)
    if weights is None:
        return x0 + cgls(op, residual, n_iter=n_iter, damping=rho)
    sqrt_w = weights.sqrt()
    return x0 + cgls(_RowWeighted(op, sqrt_w), sqrt_w * residual, n_iter=n_iter, damping=rho)
