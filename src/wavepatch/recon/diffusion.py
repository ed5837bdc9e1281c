"""Reconstruction with a learned prior: a task, a measurement and a prior checkpoint -> posterior samples.

``reconstruct_diffusion`` builds the denoiser (PaDIS random-shift patches for a patch prior, unless
``patch_mode`` says otherwise), the likelihood (Poisson for ct-lowdose, Gaussian otherwise), the noise schedule,
and runs one of the samplers of :mod:`wavepatch.sampling.posterior`. ``fast`` starts from the ADMM-TV
reconstruction at noise level ``sigma_start`` instead of from pure noise (fewer levels, fewer NFE). For PaDIS,
fast mode also replaces the Langevin inner loop and its gradient-through-the-network data step (which need
~1000 NFE to converge) by one step per level of: random-shift patch denoiser, data consistency by ``cg``
conjugate-gradient iterations on the denoised estimate (the decomposed diffusion sampler of Chung et al. 2024;
DDNM's update with an iterative pseudo-inverse), re-noising to the next level with fresh noise fraction ``eta``.
No backpropagation through the network, so an NFE also costs a third of a PaDIS NFE.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from wavepatch.prior.checkpoint import load_prior
from wavepatch.prior.model import make_denoiser
from wavepatch.sampling import posterior as P
from wavepatch.sampling.unconditional import geometric_sigmas, karras_sigmas
from wavepatch.sampling.wavelet_regularized import wavelet_regularized_langevin
from wavepatch.tasks import Task

Tensor = torch.Tensor

DIFFUSION_METHODS = ("padis", "dps", "mcg", "langevin", "pc", "ddnm", "wavelet-langevin")
MODELS_DIR = Path(__file__).resolve().parents[3] / "models"

# Defaults per method; every key can be overridden (CLI --param key=value, --steps). zeta is per-pixel
# normalised (0.01 corresponds to PaDIS' official 0.3); 0.1 was chosen for DPS (100 NFE: 25.67 dB vs 16.65 at
# 0.3) and PaDIS (20 x 5 NFE: 23.13 dB) on 20-view CT of training slice A0001_B_025 (0.01 gave ~17 dB on the
# test slices), and MCG takes DPS' value (docs/results.md section 6). PaDIS' eta and cg act only in fast mode;
# they were chosen on training slices A0001_B_025 / _045.
# Noise schedule shared by all methods: levels from sigma_max (cold start) or sigma_start (--fast) to sigma_min.
_SCHEDULE = {"sigma_max": 10.0, "sigma_min": 0.003, "sigma_start": 0.1}
DIFFUSION_PARAMS: dict[str, dict] = {
    "padis": {"steps": 20, "n_inner": 5, "zeta": 0.1, "eps": 0.5, "eta": 1.0, "cg": 10, **_SCHEDULE},
    "dps": {"steps": 100, "zeta": 0.1, **_SCHEDULE},
    "mcg": {"steps": 100, "zeta": 0.1, **_SCHEDULE},
    "langevin": {"steps": 50, "n_inner": 3, "eps": 0.5, **_SCHEDULE},
    "pc": {"steps": 100, "snr": 0.16, **_SCHEDULE},
    "ddnm": {"steps": 100, "eta": 0.85, **_SCHEDULE},
    # Wu et al.: Langevin + SART data step with momentum + wavelet-TV coupling (sampling/wavelet_regularized.py);
    # eps, omega, beta, lam, tau picked on training slices by benchmarks/tune_wavelet_langevin.py (docs/results.md
    # section 9, two sweeps: 25.1 -> 32.6 -> 33.5 dB mean over low-dose CT, 20-view CT and MRI x4)
    "wavelet-langevin": {"steps": 30, "n_inner": 3, "eps": 1.5, "omega": 1.9, "beta": 0.8, "lam": 0.5,
                         "tau": 0.005, **_SCHEDULE},
}

# Fast mode (warm start at sigma_start): levels, unless --steps says otherwise.
FAST_STEPS = {"padis": 50}


def default_prior(task_name: str, method: str) -> Path:
    """The bundled prior for a task: MRI -> mri_patch256; CT and CT-image restoration -> ct_patch256 for PaDIS,
    ct_whole256 for the whole-image samplers."""
    if task_name == "mri":
        return MODELS_DIR / "mri_patch256.safetensors"
    return MODELS_DIR / ("ct_patch256.safetensors" if method == "padis" else "ct_whole256.safetensors")


def cached_prior(path: str | Path, device: str = "cpu"):
    """``load_prior`` once per (file, modification time, device): a bench run reconstructs many slices with the
    same prior. The model is in eval mode and never modified by the samplers."""
    p = Path(path)
    return _load_cached(str(p.resolve()), p.stat().st_mtime_ns if p.exists() else 0, str(device))


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, device: str):
    return load_prior(path, device=device)


def diffusion_params(method: str, overrides: dict | None = None, fast: bool = False) -> dict:
    """The method's defaults with ``overrides``; in fast mode ``steps`` defaults to ``FAST_STEPS``."""
    params = dict(DIFFUSION_PARAMS[method])
    if fast and method in FAST_STEPS:
        params["steps"] = FAST_STEPS[method]
    for key, value in (overrides or {}).items():
        if key not in params:
            raise ValueError(f"method {method!r} has no parameter {key!r} (parameters: {', '.join(sorted(params))})")
        params[key] = type(params[key])(value)
    return params


def reconstruct_diffusion(task: Task, y: Tensor, method: str, prior: str | Path, params: dict,
                          generator: torch.Generator, samples: int = 1, fast: bool = False,
                          x_fast: Tensor | None = None, patch_mode: str = "padis", device: str = "cpu",
                          progress: bool = False) -> tuple[Tensor, int]:
    """``samples`` posterior samples (K, 1, N, N) for measurement y (1, ...), and the NFE per sample.

    fast: warm start from ``x_fast`` (the ADMM-TV reconstruction) at sigma_start with levels from sigma_start."""
    if method not in DIFFUSION_METHODS:
        raise ValueError(f"unknown diffusion method {method!r}; choose from {', '.join(DIFFUSION_METHODS)}")
    model, cfg = cached_prior(prior, device)
    if method == "padis" and cfg.kind != "patch":
        raise ValueError(f"padis needs a patch prior; {prior} is a {cfg.kind} prior")
    calls = [0]
    base = make_denoiser(model, cfg, mode=patch_mode, generator=generator)

    def denoise(x: Tensor, sigma) -> Tensor:
        calls[0] += 1
        return base(x, sigma)

    op = task.op
    y_k = y.to(device).expand(samples, *y.shape[1:]) if y.shape[0] == 1 else y.to(device)
    if task.name == "ct-lowdose":
        lik = P.poisson_likelihood(op, y_k, task.params["dose"], task.params["mu_per_unit"])
    else:
        lik = P.gaussian_likelihood(op, y_k)
    noise_std = float(task.params.get("noise", 0.0) or 0.0)
    sigma_max = params["sigma_start"] if fast else params["sigma_max"]
    langevin_type = method in ("langevin", "wavelet-langevin") or (method == "padis" and not fast)
    schedule = geometric_sigmas if langevin_type else karras_sigmas
    sigmas = schedule(int(params["steps"]), params["sigma_min"], sigma_max)
    n = task.op.image_shape[-1]
    if fast:
        if x_fast is None:
            raise ValueError("fast mode needs the warm-start image")
        x = P.warm_start(x_fast.to(device).expand(samples, 1, n, n), sigma_max, generator)
    else:
        x = sigma_max * torch.randn((samples, 1, n, n), generator=generator).to(device)
    kw = {"generator": generator, "progress": progress}
    if method == "padis" and fast:  # random-shift patch denoiser; data consistency by CG on its estimate (DDS)
        out = P.ddnm(denoise, op, y_k, x, sigmas, eta=params["eta"],
                     data_step=_data_step(task, y_k, noise_std, int(params["cg"])), **kw)
    elif method == "padis":
        out = P.padis(denoise, lik, x, sigmas, n_inner=int(params["n_inner"]), zeta=params["zeta"], eps=params["eps"],
                      **kw)
    elif method == "dps":
        out = P.dps(denoise, lik, x, sigmas, zeta=params["zeta"], **kw)
    elif method == "mcg":
        out = P.mcg(denoise, lik, op, y_k, x, sigmas, zeta=params["zeta"], pinv=_pinv(task), **kw)
    elif method == "langevin":
        out = P.langevin(denoise, op, y_k, x, sigmas, noise_std=noise_std, n_inner=int(params["n_inner"]),
                         eps=params["eps"], **kw)
    elif method == "pc":
        out = P.predictor_corrector(denoise, op, y_k, x, sigmas, noise_std=noise_std, snr=params["snr"], **kw)
    elif method == "wavelet-langevin":
        out = wavelet_regularized_langevin(denoise, op, y_k, x, sigmas, n_inner=int(params["n_inner"]),
                                           eps=params["eps"], omega=params["omega"], beta=params["beta"],
                                           lam=params["lam"], tau=params["tau"], **kw)
    else:
        out = P.ddnm(denoise, op, y_k, x, sigmas, eta=params["eta"], data_step=_data_step(task, y_k, noise_std),
                     **kw)
    return out.detach().float().cpu(), calls[0]  # the samples run as one batch: calls = NFE per sample


def _data_step(task: Task, y: Tensor, noise_std: float, cg: int = 10):
    """The data step ``(x0, sigma) -> x0`` of fast PaDIS and DDNM. Noiseless measurements: the projection
    x0 - A^+(A x0 - y) (:func:`_pinv`). Noisy ones: the MAP combination of the denoised estimate, error std
    ~ sigma per pixel, with the measurement (:func:`posterior.proximal_data_step`), since fitting noisy data
    exactly at every level leaves the final image as noisy as a least-squares reconstruction. Gaussian noise:
    rho = noise_std^2 / sigma^2. Low-dose CT: post-log data y (operator units) has variance 1 / (mu^2 counts) per
    bin, so W = mu^2 counts and rho = 1 / sigma^2."""
    if task.name == "ct-lowdose":
        mu = task.params["mu_per_unit"]
        weights = mu**2 * P.postlog_counts(y, task.params["dose"], mu)
        return lambda x0, s: P.proximal_data_step(task.op, y, x0, 1.0 / s**2, weights, n_iter=cg)
    if noise_std > 0:
        return lambda x0, s: P.proximal_data_step(task.op, y, x0, noise_std**2 / s**2, n_iter=cg)
    pinv = _pinv(task, cg)
    return lambda x0, s: x0 - pinv(task.op.A(x0) - y)


def _pinv(task: Task, cg: int = 10):
    """A^+ applied to a residual, for MCG / DDNM / fast PaDIS. MRI and inpainting: the exact pseudo-inverse
    (zero filling / the mask). Others (CT, deblurring, super-resolution): ``cg`` CGLS iterations on the residual,
    a stable approximate pseudo-inverse whose early stopping also keeps measurement noise from being amplified
    (FBP, which PaDIS' code uses, is not a contraction at 20 views and makes the repeated correction diverge; a
    converged least-squares inverse of a blur amplifies the noise)."""
    if task.name == "mri":
        return task.baseline
    if task.name == "inpaint":
        return task.op.A_dagger
    from wavepatch.recon.least_squares import cgls

    return lambda r: cgls(task.op, r, n_iter=cg)
