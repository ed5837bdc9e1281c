"""One reconstruction experiment: clean image -> simulated measurement -> method -> metrics.

Shared by ``wavepatch reconstruct`` (one image, files for a person) and ``wavepatch bench`` (many images and
methods, tables). Classical methods come from :mod:`wavepatch.recon.methods`, learned-prior methods from
:mod:`wavepatch.recon.diffusion`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wavepatch.metrics import image_metrics
from wavepatch.recon.diffusion import (
    DIFFUSION_METHODS,
    cached_prior,
    default_prior,
    diffusion_params,
    reconstruct_diffusion,
)
from wavepatch.recon.methods import method_params, reconstruct
from wavepatch.tasks import Task, TaskOptions, make_task

Tensor = torch.Tensor
# PnP-ADMM / RED with a learned prior: denoiser strength (unit-image noise std) and iterations (= NFE), chosen on
# training slices (benchmarks/psnr_vs_nfe.py on A0001_B_025: 34.3 / 38.4 / 38.8 dB at 20 / 40 / 80 NFE)
LEARNED_DEFAULTS = {"sigma": 0.03, "n_iter": 50}


@dataclass
class RunResult:
    """recon / baseline: (1, 1, N, N); std: (1, 1, N, N) posterior std or None; seconds: method wall time;
    nfe: denoiser evaluations per sample (learned priors) or None; params: everything the method ran with;
    compared: {method: (recon (1, 1, N, N), metrics, seconds)} for the ``compare`` methods, run on the same
    measurement."""

    task: Task
    recon: Tensor
    baseline: Tensor
    std: Tensor | None
    seconds: float
    nfe: int | None
    params: dict
    metrics: dict
    baseline_metrics: dict
    compared: dict = field(default_factory=dict)


def learned_denoiser(prior: str | Path, generator: torch.Generator, device: str = "cpu"):
    """A prior's ``denoise(x, sigma)`` (PaDIS random-shift patches for a patch prior) without autograd, for
    PnP-ADMM / RED."""
    from wavepatch.prior.model import make_denoiser

    model, cfg = cached_prior(prior, device)
    base = make_denoiser(model, cfg, mode="padis", generator=generator)

    @torch.no_grad()
    def denoise(x: Tensor, sigma: float) -> Tensor:
        return base(x.to(device), sigma).to(x.device)

    return denoise


def run_reconstruction(img: np.ndarray, task_name: str, opts: TaskOptions, method: str,
                       overrides: dict | None = None, seed: int = 0, prior: str | Path | None = None,
                       samples: int = 1, fast: bool = False, patch_mode: str = "padis", device: str = "cpu",
                       progress: bool = False, compare: tuple[str, ...] = ()) -> RunResult:
    """Simulate the measurement of ``img`` (N, N) in [0, 1] for ``task_name`` and reconstruct it with ``method``.

    ``compare``: classical methods (with their tuned defaults) also run on the same measurement; in fast mode
    the ADMM-TV warm start is reused rather than recomputed (its time is part of the learned method's).

    Seeds: the task (masks) uses ``seed``, the measurement noise ``seed + 1``, posterior sampling ``seed + 2``."""
    n = img.shape[-1]
    task = make_task(task_name, n, opts, torch.Generator().manual_seed(seed))
    overrides = dict(overrides or {})
    learned = method in DIFFUSION_METHODS
    if learned:
        if samples < 1:
            raise ValueError(f"--samples must be at least 1, got {samples}")
        params = diffusion_params(method, overrides, fast)
    else:
        params = method_params(task.name, method, overrides) if method not in ("fbp", "adjoint") else {}
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    y = task.simulate(x, torch.Generator().manual_seed(seed + 1))
    std, nfe = None, None
    t0 = time.perf_counter()
    if learned:
        prior = Path(prior) if prior else default_prior(task.name, method)
        t_fast = time.perf_counter()
        x_fast = reconstruct(task, y, "admm-tv") if fast else None
        t_fast = time.perf_counter() - t_fast
        draws, nfe = reconstruct_diffusion(task, y, method, prior, params, torch.Generator().manual_seed(seed + 2),
                                           samples=samples, fast=fast, x_fast=x_fast, patch_mode=patch_mode,
                                           device=device, progress=progress)
        recon = draws.mean(dim=0, keepdim=True)
        std = draws.std(dim=0, keepdim=True) if samples > 1 else None
        params = {**params, "prior": str(prior), "samples": samples, "fast": fast, "patch_mode": patch_mode}
    elif method in ("pnp-admm", "red") and params.get("denoiser") == "learned":
        # the learned denoiser's own defaults (sigma: 0.03 best of {0.01, 0.03, 0.05, 0.1} with 0.05 as good on
        # training slices, 20-view CT); explicit --param values win
        for key, value in LEARNED_DEFAULTS.items():
            if key not in overrides:
                overrides[key] = value
                params[key] = value
        prior = Path(prior) if prior else default_prior(task.name, "padis")
        base_denoise = learned_denoiser(prior, generator=torch.Generator().manual_seed(seed + 2), device=device)
        calls = [0]

        def denoise(x: Tensor, sigma: float) -> Tensor:
            calls[0] += 1
            return base_denoise(x, sigma)

        recon = reconstruct(task, y, method, {**overrides, "denoiser": "wavelet"}, progress=progress,
                            denoiser=denoise)
        nfe = calls[0]
        params = {**params, "prior": str(prior)}
    else:
        recon = reconstruct(task, y, method, overrides, progress=progress)
    seconds = time.perf_counter() - t0
    if not torch.isfinite(recon).all():
        raise ValueError(f"{method} produced non-finite values on {task_name}; try other --param values")
    baseline = task.baseline(y)
    compared = {}
    for other in compare:
        if other == method:
            continue
        t1 = time.perf_counter()
        if other == "admm-tv" and learned and fast:
            rec, sec = x_fast, t_fast
        else:
            rec = reconstruct(task, y, other)
            sec = time.perf_counter() - t1
        compared[other] = (rec, image_metrics(rec, x), sec)
    return RunResult(task, recon, baseline, std, seconds, nfe, params, image_metrics(recon, x),
                     image_metrics(baseline, x), compared)
