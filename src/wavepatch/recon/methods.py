"""Classical reconstruction methods by name, with per-task default parameters.

Per-task defaults are the best of a small grid on training data (two CT slices of the training patient, two
planes of the MRI template; never the test slice), by mean PSNR, with ``benchmarks/tune_classical.py``
(results: ``benchmarks/results/tune_classical.json``). Any of them can be overridden (CLI: ``--param key=value``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wavepatch.recon.admm import admm_tv, pnp_admm
from wavepatch.recon.denoisers import tv_denoiser, wavelet_denoiser
from wavepatch.recon.fista import fista_tv, l1_wavelet
from wavepatch.recon.least_squares import cgls
from wavepatch.recon.red import red
from wavepatch.tasks import Task

Tensor = torch.Tensor

METHODS = ("fbp", "adjoint", "cgls", "fista-tv", "admm-tv", "l1-wavelet", "pnp-admm", "red")

DENOISERS: dict[str, Callable[[Tensor, float], Tensor]] = {"tv": tv_denoiser, "wavelet": wavelet_denoiser}

# Method parameters shared by all tasks, then per-task overrides (task name -> method -> params).
BASE_PARAMS: dict[str, dict] = {
    "cgls": {"n_iter": 30},
    "fista-tv": {"lam": 1e-3, "n_iter": 100},
    "admm-tv": {"lam": 1e-3, "rho": 0.05, "n_iter": 50},
    "l1-wavelet": {"lam": 1e-3, "n_iter": 100},
    "pnp-admm": {"sigma": 0.03, "rho": 1.0, "n_iter": 30, "denoiser": "wavelet"},
    "red": {"sigma": 0.03, "lam": 0.5, "n_iter": 50, "denoiser": "wavelet"},
}
TASK_PARAMS: dict[str, dict[str, dict]] = {
    "ct-parallel": {
        "fista-tv": {"lam": 3e-05},
        "admm-tv": {"lam": 0.0001},
        "l1-wavelet": {"lam": 3e-05},
        "pnp-admm": {"sigma": 0.01, "rho": 0.003},
        "red": {"sigma": 0.01, "lam": 0.01},
    },
    "ct-fan": {
        "fista-tv": {"lam": 0.0001},
        "admm-tv": {"lam": 0.0001},
        "l1-wavelet": {"lam": 0.0001},
        "pnp-admm": {"sigma": 0.01, "rho": 0.003},
        "red": {"sigma": 0.01, "lam": 0.01},
    },
    "ct-lowdose": {
        "fista-tv": {"lam": 0.0003},
        "admm-tv": {"lam": 0.0001},
        "l1-wavelet": {"lam": 0.0003},
        "pnp-admm": {"sigma": 0.003, "rho": 0.03},
        "red": {"sigma": 0.01, "lam": 0.01},
    },
    "mri": {
        "fista-tv": {"lam": 3e-05},
        "admm-tv": {"lam": 0.0003},
        "l1-wavelet": {"lam": 3e-05},
        "pnp-admm": {"sigma": 0.03, "rho": 0.03},
        "red": {"sigma": 0.003, "lam": 1.0},
    },
    "deblur": {
        "fista-tv": {"lam": 0.001},
        "admm-tv": {"lam": 0.0003},
        "l1-wavelet": {"lam": 0.0003},
        "pnp-admm": {"sigma": 0.01, "rho": 0.03},
        "red": {"sigma": 0.003, "lam": 0.1},
    },
    "sr": {
        "fista-tv": {"lam": 0.003},
        "admm-tv": {"lam": 0.003},
        "l1-wavelet": {"lam": 0.003},
        "pnp-admm": {"sigma": 0.01, "rho": 0.3},
        "red": {"sigma": 0.003, "lam": 1.0},
    },
    "inpaint": {
        "fista-tv": {"lam": 0.003},
        "admm-tv": {"lam": 0.003},
        "l1-wavelet": {"lam": 0.003},
        "pnp-admm": {"sigma": 0.03, "rho": 0.03},
        "red": {"sigma": 0.01, "lam": 1.0},
    },
}


def method_params(task_name: str, method: str, overrides: dict | None = None) -> dict:
    """The parameters ``method`` runs with on ``task_name``: base, then task defaults, then ``overrides``."""
    params = dict(BASE_PARAMS.get(method, {}))
    params.update(TASK_PARAMS.get(task_name, {}).get(method, {}))
    for key, value in (overrides or {}).items():
        if key not in params:
            known = ", ".join(sorted(params)) or "none"
            raise ValueError(f"method {method!r} has no parameter {key!r} (parameters: {known})")
        params[key] = type(params[key])(value) if not isinstance(params[key], str) else str(value)
    return params


def reconstruct(task: Task, y: Tensor, method: str, params: dict | None = None,
                progress: bool = False, denoiser: Callable[[Tensor, float], Tensor] | None = None) -> Tensor:
    """Run classical ``method`` on measurement ``y`` of ``task``; returns (B, 1, N, N).

    Iterative methods start from the task's baseline reconstruction. ``denoiser``: for pnp-admm / red, any
    ``denoiser(x, sigma)`` (a learned prior's, say) instead of the named classical one."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    x_base = task.baseline(y)
    if method in ("fbp", "adjoint"):
        return x_base
    p = method_params(task.name, method, params)
    op = task.op
    if method == "cgls":
        return cgls(op, y, n_iter=int(p["n_iter"]), progress=progress)
    if method == "fista-tv":
        return fista_tv(op, y, lam=p["lam"], n_iter=int(p["n_iter"]), x0=x_base, progress=progress)
    if method == "admm-tv":
        return admm_tv(op, y, lam=p["lam"], rho=p["rho"], n_iter=int(p["n_iter"]), x0=x_base,
                       progress=progress)
    if method == "l1-wavelet":
        return l1_wavelet(op, y, lam=p["lam"], n_iter=int(p["n_iter"]), x0=x_base, progress=progress)
    denoiser = denoiser or _denoiser(p["denoiser"])
    if method == "pnp-admm":
        return pnp_admm(op, y, denoiser, sigma=p["sigma"], rho=p["rho"], n_iter=int(p["n_iter"]), x0=x_base,
                        progress=progress)
    return red(op, y, denoiser, sigma=p["sigma"], lam=p["lam"], n_iter=int(p["n_iter"]), x0=x_base,
               progress=progress)


def _denoiser(name: str) -> Callable[[Tensor, float], Tensor]:
    try:
        return DENOISERS[name]
    except KeyError:
        raise ValueError(f"unknown denoiser {name!r}; choose from {', '.join(DENOISERS)}") from None
