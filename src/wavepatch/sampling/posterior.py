"""Posterior samplers for inverse problems: functions of (denoise, fidelity, x_init, sigmas, *, generator, callback).

``denoise(x, sigma)`` is any prior's denoiser; ``fidelity`` the measurement's data term
(:mod:`wavepatch.fidelity`: residual, grad, prox, project, annealed_grad, scale); ``sigmas`` a decreasing
schedule ending in 0 (``karras_sigmas`` / ``geometric_sigmas``); x_init is ``sigmas[0] * z`` for a cold start or
a warm start (``warm_start``); ``callback`` gets the step state once per level (:mod:`wavepatch.sampling.steps`).
Each returns the final estimate, shaped like x_init. VE process x_sigma = x0 + sigma z throughout.

Data steps are dimensionless: a gradient step of size ``zeta`` is divided by ``fidelity.scale`` and moves the
image by about zeta per pixel (RMS), whatever the operator's scale and the image size.

Which need the network's gradient: DPS, PiGDM, MCG, PaDIS (backpropagate through the denoiser). Which do not:
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


def _denoise_with_grad(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigma: float,
                       squared: bool = False) -> tuple[Tensor, Tensor]:
    """(D(x), grad_x r(D(x))) with r = sqrt(residual) (the un-squared norm DPS' code differentiates; ``squared``:
    r = residual / 2) and the gradient through the network; x is not modified."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        d = denoise(xg, sigma)
        res = fidelity.residual(d)
        r = res / 2 if squared else res.sqrt()
        (g,) = torch.autograd.grad(r.sum(), xg)
    return d.detach(), g


def dps(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, zeta: float = 0.1,
        step: str = "linesearch", c: float = 0.25, generator: torch.Generator | None = None,
        callback: Callback | None = None) -> Tensor:
    """Diffusion posterior sampling (Chung et al. 2023) on the VE reverse SDE.

    Each level: x0 = D(x, s) and g = grad_x residual(x0(x)) / 2 (through the network); the ancestral step to s'
    (DDPM's step as in DPS' code), then the data step x <- x - lambda g. The last level returns x0 - lambda g.
    step="normalized" is the paper's size lambda = zeta_t = zeta' / ||A x0 - y||, here zeta / (scale sqrt(residual)):
    every step moves the image by up to zeta per pixel whatever the residual, so it cannot settle closer than
    that, and on noisy data it keeps fitting the noise. step="linesearch": lambda minimises
    residual(x0 - lambda g) / 2 + lambda^2 ||g||^2 / (2 r^2) (:func:`_guidance_step`; r^2 = s^2 c^2 / (s^2 + c^2)
    as in :func:`pigdm`, noisy data only; zeta unused): the full step while the data are far, shrinking with the
    misfit and, on noisy data, with s. The direction is DPS' own in both. NFE = len(sigmas) - 1, each with a
    backward through the network."""
    if step not in ("normalized", "linesearch"):
        raise ValueError(f"step must be 'normalized' or 'linesearch', got {step!r}")
    denoise = Counted(denoise)
    pairs = level_pairs(sigmas)
    for i, (s, s_next) in enumerate(pairs):
        x0, g = _denoise_with_grad(denoise, fidelity, x, s, squared=step == "linesearch")
        if step == "linesearch":
            g = g * _newton_length(fidelity, x0, g)
            move = _guidance_step(fidelity, x0, -g, estimate_std(s, c)) * g
        else:
            move = zeta / fidelity.scale * g
        x = x0 - move if s_next == 0 else ancestral_step(x, x0, s, s_next, generator) - move
        report(callback, i, len(pairs), s, x, x0, denoise)
        if s_next == 0:
            break
    return x.detach()


def _newton_length(fidelity: DataFidelity, x0: Tensor, g: Tensor) -> Tensor:
    """t (B, 1, ...): the Newton step along -g of the data term residual / 2 at x0, <grad, g> / <g, H g>, with the
    Hessian-vector product H g from a finite difference of ``fidelity.grad`` (exact for Gaussian noise, whose
    gradient is linear). It puts the unit of :func:`_guidance_step`'s three-point fit at the right length for a
    non-quadratic residual (the Poisson deviance overflows a step many times too long); 0 where g is 0."""
    dims = tuple(range(1, g.ndim))
    gn = g.double().pow(2).sum(dims, keepdim=True).sqrt()
    eps = 1e-2 * (g[0].numel() ** 0.5) / gn.clamp_min(1e-300)  # a probe of 0.01 per pixel RMS
    base = fidelity.grad(x0)
    hg = (fidelity.grad(x0 + (eps * g).to(g.dtype)) - base).double() / eps
    num = (base.double() * g.double()).sum(dims, keepdim=True)
    den = (g.double() * hg).sum(dims, keepdim=True)
    t = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(den)).clamp_min(0.0)
    return t.to(g.dtype)


def _guidance_step(fidelity: DataFidelity, d: Tensor, g: Tensor, r: float) -> Tensor:
    """The step lambda >= 0 (B, 1, ...) along the guidance direction g that minimises
    residual(d + lambda g) / 2 + lambda^2 ||g||^2 / (2 r^2) (noiseless data: the residual alone). The residual is
    quadratic in lambda for Gaussian noise, so three evaluations give it exactly (Poisson: its quadratic fit)."""
    f0, f1, f2 = (fidelity.residual(d + t * g).double() / 2 for t in (0.0, 1.0, 2.0))
    a, b = (f2 - 2 * f1 + f0) / 2, (4 * f1 - 3 * f0 - f2) / 2  # f(t) = a t^2 + b t + f0
    if not fidelity.noiseless:
        a = a + g.flatten(1).double().pow(2).sum(1) / (2 * r**2)
    lam = torch.where(a > 0, -b / (2 * a).clamp_min(1e-300), torch.zeros_like(a)).clamp_min(0.0)
    return lam.to(g.dtype).view(-1, *([1] * (g.ndim - 1)))


def estimate_std(s: float, c: float) -> float:
    """r: the std per pixel of x0 given x_s under a N(m, c^2 I) prior, r^2 = s^2 c^2 / (s^2 + c^2)."""
    return s * c / (s**2 + c**2) ** 0.5


def guided_estimate(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, s: float, c: float, cg: int) -> Tensor:
    """PiGDM's estimate of E[x0 | x_s, y]: d + lambda J^T v with d = D(x, s), v = A^+(y - A d) at the estimate's
    uncertainty r^2 = s^2 c^2 / (s^2 + c^2) (``data_consistency``), lambda by :func:`_guidance_step`. One
    denoiser call and one backward."""
    r = estimate_std(s, c)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        d = denoise(xg, s)
        v = data_consistency(fidelity, d.detach(), r, cg) - d.detach()
        (g,) = torch.autograd.grad(d, xg, grad_outputs=v)
    d = d.detach()
    return d + _guidance_step(fidelity, d, g, r) * g


def pigdm(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, c: float = 0.25, cg: int = 10,
          generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """Pseudoinverse-guided diffusion (PiGDM, Song, Vahdat, Mardani & Kautz 2023) on the VE process, with the
    guidance weight chosen by a line search.

    Each level: d = D(x, s) and the vector-Jacobian product g = J^T v with v = A^+(y - A d)
    (``data_consistency`` at the estimate's uncertainty r^2 = s^2 c^2 / (s^2 + c^2), the variance of x0 | x_s
    under a N(m, c^2 I) prior: the projection for noiseless data, the MAP step with (r^2 A A^T + noise)^-1 for
    noisy data); the guided estimate x0 = d + lambda g; then the ancestral step to s'. The last level returns x0.
    PiGDM's weight is lambda = s^2 / r^2 = 1 + s^2 / c^2, exact when J is isotropic; here lambda minimises the
    data misfit along g (plus ||lambda g||^2 / r^2 for noisy data; :func:`_guidance_step`), because the fixed
    weight diverged on CT (7 dB at 20 NFE, c = 0.1): the prior's variance at low frequencies far exceeds c^2.
    Where DPS steps along A^T (A d - y), whose size per frequency follows A^T A (for CT the ramp's inverse: the
    fine detail of the null-space boundary barely moves in 100 steps), the pseudo-inverse corrects every
    frequency at once. c: the prior's std per pixel (unit image), used for noisy data only; linear forward
    models only. NFE = len(sigmas) - 1, each with a backward through the network."""
    denoise = Counted(denoise)
    pairs = level_pairs(sigmas)
    for i, (s, s_next) in enumerate(pairs):
        x0 = guided_estimate(denoise, fidelity, x, s, c, cg)
        report(callback, i, len(pairs), s, x0 if s_next == 0 else x, x0, denoise)
        if s_next == 0:
            return x0
        x = ancestral_step(x, x0, s, s_next, generator)
    return x.detach()


def mcg(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, zeta: float = 0.1, cg: int = 10,
        guidance: str = "pinv", c: float = 0.25, generator: torch.Generator | None = None,
        callback: Callback | None = None) -> Tensor:
    """Manifold-constrained gradient (Chung et al. 2022): a guided step on the manifold, then the projection onto
    the noised measurement set x <- x + A^+(y + s' A z - A x) (``fidelity.pinv``: exact for inpainting and MRI,
    ``cg`` CGLS iterations otherwise). guidance="gradient" is the paper's step: the ancestral step from the
    Tweedie estimate x0 = D(x, s), minus (zeta / scale) grad_x ||A x0(x) - y|| (as :func:`dps`).
    guidance="pinv" (the default): the ancestral step from PiGDM's guided estimate x0 = d + lambda J^T A^+(y - A d)
    (:func:`guided_estimate`, c as in :func:`pigdm`; zeta unused): the gradient step follows A^T A's spectrum
    (for CT the ramp's inverse) and, on 20-view CT, fell further below ADMM-TV as NFE grew (docs/results.md
    section 6.4); the pseudo-inverse step corrects every frequency at once. The last level returns x0 projected
    onto the data. Noisy data: an exact projection would copy the noise into the image, so each projection
    becomes the MAP step between the iterate (uncertainty r^2 = s'^2 c^2 / (s'^2 + c^2), PiGDM's) and the noised
    data y + s' A z with the measurement's noise (``fidelity.noised(...).prox``), and the last one
    :func:`data_consistency`. NFE = len(sigmas) - 1, each with a backward through the network."""
    if guidance not in ("gradient", "pinv"):
        raise ValueError(f"guidance must be 'gradient' or 'pinv', got {guidance!r}")
    denoise = Counted(denoise)
    op, y = fidelity.op, fidelity.y
    pairs = level_pairs(sigmas)
    for i, (s, s_next) in enumerate(pairs):
        if guidance == "pinv":
            x0 = guided_estimate(denoise, fidelity, x, s, c, cg)
            step = 0.0
        else:
            x0, g = _denoise_with_grad(denoise, fidelity, x, s)
            step = zeta / fidelity.scale * g
        with torch.no_grad():
            if s_next == 0:
                x = data_consistency(fidelity, x0 - step, s, cg)
            else:  # onto the noised data y + s' A z; noisy data: the MAP step (noise as measured) against the
                # iterate's uncertainty
                x = ancestral_step(x, x0, s, s_next, generator) - step
                y_t = y + s_next * op.A(randn_like(x, generator))
                x = data_consistency(fidelity.noised(y_t), x, estimate_std(s_next, c), cg)
        report(callback, i, len(pairs), s, x, x0, denoise)
        if s_next == 0:
            break
    return x.detach()


def padis(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, n_inner: int = 5,
          zeta: float = 0.1, eps: float = 1.5, guidance: str = "pinv", c: float = 0.25, cg: int = 10,
          generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """PaDIS (Hu et al. 2024), the talk's loop, for a patch prior whose ``denoise`` draws a new random grid
    shift at every call. guidance="gradient" with eps=0.5 is the talk's algorithm: for each level sigma > 0 and
    each of ``n_inner`` iterations:
        d = D(x, sigma); s = (d - x)/sigma^2;
        x <- x - (zeta / scale) grad_x ||A d(x) - y||      (= zeta_t grad ||A d - y||^2, zeta_t ~ 1/||A d - y||);
        x <- x + (alpha/2) s + sqrt(alpha) z, alpha = eps sigma^2   (no noise on the very last iteration).
    Returns the last denoised estimate d with its data step. NFE = n_inner * (number of sigmas > 0).
    guidance="pinv" (the default): the same Langevin loop on the posterior score (x0 - x) / sigma^2 with x0 the
    pseudo-inverse guided estimate of :func:`guided_estimate` (c, cg as in :func:`pigdm`; zeta unused), i.e.
    x <- x + (eps / 2)(x0 - x) + sqrt(alpha) z; returns the last x0. The normalised gradient step moves every
    pixel by ~zeta whatever the residual and follows A^T A's spectrum, so from noise at 100 NFE it stays below
    ADMM-TV on 20-view CT; eps = 1.5 and pinv were chosen on training slices (docs/results.md section 6.3)."""
    if guidance not in ("gradient", "pinv"):
        raise ValueError(f"guidance must be 'gradient' or 'pinv', got {guidance!r}")
    denoise = Counted(denoise)
    levels = positive_levels(sigmas)
    d, g = x, torch.zeros_like(x)
    for li, s in enumerate(levels):
        for k in range(n_inner):
            alpha = eps * s**2
            last = li == len(levels) - 1 and k == n_inner - 1
            if guidance == "pinv":
                d = guided_estimate(denoise, fidelity, x, s, c, cg)
                x = x + eps / 2 * (d - x)
            else:
                d, g = _denoise_with_grad(denoise, fidelity, x, s)
                x = x - zeta / fidelity.scale * g + alpha / 2 * (d - x) / s**2
            if not last:
                x = x + alpha**0.5 * randn_like(x, generator)
        report(callback, li, len(levels), s, x, d, denoise)
    if guidance == "pinv":
        return d
    return (d - zeta / fidelity.scale * g).detach()


def _posterior_score(denoised: Tensor, x: Tensor, fidelity: DataFidelity, s: float, likelihood: str = "pinv",
                     cg: int = 10) -> Tensor:
    """Prior score (D - x)/s^2 plus the likelihood gradient of an estimate x with noise level s:
    likelihood="isotropic": grad log N(y; A x, V + s^2 ||A||^2 I) (``fidelity.annealed_grad``; Jalal et al.);
    "pinv": grad log N(y; A x, V + s^2 A A^T), the exact law of y given x = x0 + s z, which is
    A^T (V + s^2 A A^T)^-1 (y - A x) = (prox(x, 1 / s^2) - x) / s^2 (noiseless: A^+(y - A x) / s^2;
    ``data_consistency``, ``cg`` CGLS iterations). The isotropic form steps along A^T (y - A x), whose size per
    frequency follows A^T A (CT: the ramp's inverse), so fine detail outside A's dominant directions barely moves;
    the pseudo-inverse form corrects every frequency at once."""
    if likelihood == "isotropic":
        return (denoised - x) / s**2 + fidelity.annealed_grad(x, s)
    if likelihood != "pinv":
        raise ValueError(f"likelihood must be 'pinv' or 'isotropic', got {likelihood!r}")
    return (denoised - x + data_consistency(fidelity, x, s, cg) - x) / s**2


@torch.no_grad()
def langevin(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, n_inner: int = 3,
             eps: float = 1.5, likelihood: str = "pinv", cg: int = 10, generator: torch.Generator | None = None,
             callback: Callback | None = None) -> Tensor:
    """Annealed Langevin dynamics on the posterior: at each level, ``n_inner`` steps
    x <- x + a (score_prior + grad log p_s(y | x)) + sqrt(2 a) z, a = eps sigma^2 / 2, with the likelihood of an
    estimate carrying noise of level sigma (:func:`_posterior_score`: ``likelihood`` "pinv", the default, or
    "isotropic", Jalal et al.'s V + sigma^2 ||A||^2 I; V = the measurement's noise variance, per bin for Poisson
    data), so early steps do not over-fit; at small sigma it is the true likelihood. Ends with D(x, sigma_min).
    NFE = n_inner * (sigmas > 0) + 1."""
    denoise = Counted(denoise)
    levels = positive_levels(sigmas)
    d = None
    for i, s in enumerate(levels):
        a = eps * s**2 / 2
        for _ in range(n_inner):
            d = denoise(x, s)
            x = langevin_step(x, _posterior_score(d, x, fidelity, s, likelihood, cg), a, generator)
        report(callback, i, len(levels), s, x, d, denoise)
    return denoise(x, levels[-1])


@torch.no_grad()
def predictor_corrector(denoise: Denoiser, fidelity: DataFidelity, x: Tensor, sigmas: Tensor, *, snr: float = 0.5,
                        n_corrector: int = 1, likelihood: str = "pinv", cg: int = 10,
                        generator: torch.Generator | None = None, callback: Callback | None = None) -> Tensor:
    """Predictor-corrector (Song et al. 2021) on the posterior: ancestral predictor with the posterior score
    (prior score + the noise-level likelihood gradient of :func:`_posterior_score`, ``likelihood`` as in
    ``langevin``), then ``n_corrector`` Langevin correctors (:func:`~wavepatch.sampling.steps.corrector_step`).
    NFE = (1 + n_corrector)(len(sigmas) - 2) + 1."""
    denoise = Counted(denoise)
    pairs = level_pairs(sigmas)
    for i, (s, s_next) in enumerate(pairs):
        denoised = denoise(x, s)
        if s_next == 0:
            report(callback, i, len(pairs), s, denoised, denoised, denoise)
            return denoised
        score = _posterior_score(denoised, x, fidelity, s, likelihood, cg)
        x = ancestral_step(x, x + s**2 * score, s, s_next, generator)
        for _ in range(n_corrector):
            score = _posterior_score(denoise(x, s_next), x, fidelity, s_next, likelihood, cg)
            x = corrector_step(x, score, snr, generator)
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
