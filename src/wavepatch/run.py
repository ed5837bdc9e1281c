"""One reconstruction experiment: clean image -> simulated measurement -> method -> metrics.

Shared by ``wavepatch reconstruct`` (one image, files for a person) and ``wavepatch bench`` (many images and
methods, tables). Methods come from the registry (:mod:`wavepatch.methods`); samplers run through
:func:`wavepatch.learned.run_sampler`; everything a method sees of the measurement is the task's data fidelity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wavepatch.fidelity import DataFidelity
from wavepatch.learned import cached_prior, cached_translator, default_prior, learned_denoiser, run_sampler
from wavepatch.methods import Method, get_method, names
from wavepatch.metrics import image_metrics
from wavepatch.prior.model import resolve_precision
from wavepatch.recon.denoisers import tv_denoiser, wavelet_denoiser
from wavepatch.resources import prior_path
from wavepatch.sampling.steps import Counted
from wavepatch.tasks import Task, TaskOptions, make_task
from wavepatch.types import Denoiser

Tensor = torch.Tensor
CLASSICAL_DENOISERS = {"tv": tv_denoiser, "wavelet": wavelet_denoiser}


@dataclass
class RunResult:
    """recon / baseline: (1, 1, H, W); std: (1, 1, H, W) posterior std or None; seconds: method wall time;
    nfe: denoiser evaluations per sample (learned priors) or None; params: everything the method ran with;
    compared: {method: (recon (1, 1, H, W), metrics, seconds)} for the ``compare`` methods, run on the same
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
    y: Tensor | None = None  # the measurement (simulated or read), in the operator's units


def run_classical(method: Method, fidelity: DataFidelity, x0: Tensor, params: dict, progress: bool = False,
                  learned: Denoiser | None = None, network: str | Path | None = None) -> Tensor:
    """Run classical ``method`` from the baseline x0 with ``params`` (resolved); a denoiser parameter becomes the
    named classical denoiser, or ``learned`` for 'learned'; a method with a network gets the translator of
    ``network`` (default: its bundled one)."""
    kwargs = dict(params)
    for p in method.params:
        if p.denoiser:
            kwargs[p.name] = learned if kwargs[p.name] == "learned" else CLASSICAL_DENOISERS[kwargs[p.name]]
    if method.network is not None:
        kwargs["translator"] = cached_translator(network or prior_path(method.network))[0]
    return method.run(fidelity, x0, progress=progress, **kwargs)


def gaussian_std(task: Task) -> float:
    """The task's white Gaussian measurement noise std (0 for noiseless, Poisson or per-entry noise)."""
    std = getattr(task.noise, "std", 0.0)
    return float(std) if isinstance(std, (int, float)) else 0.0


def reconstruct(task: Task, y: Tensor, method: str, overrides: dict | None = None, progress: bool = False) -> Tensor:
    """A classical method with its defaults for ``task`` (and ``overrides``) on measurement y; (B, 1, H, W)."""
    entry = get_method(method)
    if entry.kind != "classical":
        raise ValueError(f"{method} is a learned-prior method; use run_reconstruction")
    params = entry.resolve(task.name, overrides, noise_std=gaussian_std(task))
    if entry.uses_learned_denoiser(params):
        raise ValueError(f"{method} with the learned denoiser needs a prior; use run_reconstruction")
    return run_classical(entry, task.fidelity(y), task.baseline(y), params, progress)


def _check_options(entry: Method, samples: int, prior, patch_mode: str, params: dict) -> None:
    """Refuse options that do not apply to ``entry`` (one line each) rather than ignore them (``--fast`` is
    refused for classical methods by ``Method.resolve``)."""
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    if entry.kind == "sampler":
        return
    learned = entry.uses_learned_denoiser(params) or entry.network is not None
    for flag, given in (("--samples", samples != 1), ("--patch-mode", patch_mode != "padis"),
                        ("--prior", prior is not None and not learned)):
        if given:
            raise ValueError(f"{flag} is for the learned-prior methods (or pnp-admm / red with denoiser=learned, "
                             "ldct-metric); "
                             f"{entry.name} does not use it")


def _check_linear(task: Task, entry: Method, compare: list[Method], fast: bool) -> None:
    """On a nonlinear task (phase retrieval) only methods declared ``nonlinear`` run (``--fast`` warm-starts from
    the task's baseline there, HIO, instead of ADMM-TV)."""
    if task.linear:
        if entry.name == "hio" or any(c.name == "hio" for c in compare):
            raise ValueError(f"hio applies to phase retrieval (--task phase-retrieval) only, not {task.name}")
        return
    usable = ", ".join(sorted(n for n in names() if get_method(n).nonlinear))
    for m in (entry, *compare):
        if not m.nonlinear:
            raise ValueError(f"{m.name} needs a linear forward model; {task.name} is nonlinear (use {usable})")


def simulate_measurement(img: np.ndarray, task_name: str, opts: TaskOptions, seed: int = 0
                         ) -> tuple[Task, Tensor, Tensor]:
    """(task, truth x (1, 1, H, W) float32, measurement y) for image ``img`` (H, W) in [0, 1]: the task's
    random parts (masks) drawn with ``seed``, the measurement noise with ``seed + 1``."""
    task = make_task(task_name, tuple(img.shape[-2:]), opts, torch.Generator().manual_seed(seed))
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    return task, x, task.simulate(x, torch.Generator().manual_seed(seed + 1))


def run_reconstruction(img: np.ndarray, task_name: str, opts: TaskOptions, method: str,
                       overrides: dict | None = None, seed: int = 0, prior: str | Path | None = None,
                       samples: int = 1, fast: bool = False, patch_mode: str = "padis", device: str = "cpu",
                       progress: bool = False, compare: tuple[str, ...] = (), precision: str = "auto") -> RunResult:
    """Simulate the measurement of ``img`` (H, W) in [0, 1] for ``task_name`` and reconstruct it with ``method``.

    ``compare``: classical methods (with their tuned defaults) also run on the same measurement; in fast mode
    the ADMM-TV warm start is reused rather than recomputed (its time is part of the learned method's).

    Seeds: the task (masks) uses ``seed``, the measurement noise ``seed + 1``, posterior sampling ``seed + 2``."""
    task, x, y = simulate_measurement(img, task_name, opts, seed)
    return solve(task, y, method, overrides, seed, prior, samples, fast, patch_mode, device, progress, compare,
                 truth=x, precision=precision)


def data_metrics(fidelity: DataFidelity, x: Tensor) -> dict:
    """What can be said without ground truth: the relative data residual ||A x - y|| / ||y|| and the data term
    (-2 log-likelihood up to a constant, per measurement entry)."""
    y = fidelity.y
    rel = float((fidelity.op.A(x) - y).abs().pow(2).sum().sqrt() / y.abs().pow(2).sum().sqrt().clamp_min(1e-30))
    return {"relative_residual": rel, "data_term_per_entry": float(fidelity.residual(x).sum()) / y.numel()}


def fast_warm_start(task: Task, fidelity: DataFidelity, baseline: Tensor) -> Tensor:
    """The learned fast mode's starting image (1, *image_shape) for the measurement in ``fidelity``: ADMM-TV at
    the task's defaults from ``baseline``, or on a nonlinear task (phase retrieval) the baseline itself (HIO)."""
    if not task.linear:
        return baseline
    admm = get_method("admm-tv")
    return run_classical(admm, fidelity, baseline, admm.resolve(task.name, noise_std=gaussian_std(task)))


def solve(task: Task, y: Tensor, method: str, overrides: dict | None = None, seed: int = 0,
          prior: str | Path | None = None, samples: int = 1, fast: bool = False, patch_mode: str = "padis",
          device: str = "cpu", progress: bool = False, compare: tuple[str, ...] = (),
          truth: Tensor | None = None, precision: str = "auto", warm_start: Tensor | None = None) -> RunResult:
    """Reconstruct measurement y of ``task`` (simulated, or measured and read from a file) with ``method``.

    With ``truth`` (1, 1, H, W) the metrics are PSNR / SSIM against it; without (measured data) they are the
    data-consistency figures of :func:`data_metrics`. Posterior sampling uses seed ``seed + 2``. ``precision``:
    the learned network's arithmetic ('auto', 'fp32', 'bf16'; see ``prior.model.resolve_precision``).
    ``warm_start``: the fast mode's warm start of this very y, already computed (:func:`fast_warm_start`), so
    that several runs on one measurement (``--auto``'s candidates) compute it once; None computes it."""
    entry = get_method(method)
    noise_std = gaussian_std(task)
    params = entry.resolve(task.name, overrides, fast, noise_std=noise_std)
    _check_options(entry, samples, prior, patch_mode, params)
    compare_entries = [get_method(c) for c in compare]
    for c in compare_entries:
        if c.kind != "classical":
            raise ValueError(f"--compare takes classical methods; {c.name} is a learned-prior method")
    _check_linear(task, entry, compare_entries, fast)
    fidelity = task.fidelity(y)
    baseline = task.baseline(y)
    std, nfe = None, None
    t0 = time.perf_counter()
    if entry.kind == "sampler":
        prior = Path(prior) if prior else default_prior(task.name, entry.prior, task.op.image_shape[-1])
        t_fast = time.perf_counter()
        x_fast = None
        if fast:
            x_fast = warm_start if warm_start is not None else fast_warm_start(task, fidelity, baseline)
        t_fast = time.perf_counter() - t_fast
        draws, nfe = run_sampler(entry, fidelity, prior, params, torch.Generator().manual_seed(seed + 2),
                                 samples=samples, fast=fast, x_fast=x_fast, patch_mode=patch_mode, device=device,
                                 precision=precision,
                                 progress=progress)
        params = {**params, "prior": str(prior), "samples": samples, "fast": fast, "patch_mode": patch_mode,
                  "precision": resolve_precision(precision, device)}
        if task.align is None or samples == 1:
            recon = draws.mean(dim=0, keepdim=True)
            std = draws.std(dim=0, keepdim=True) if samples > 1 else None
        else:  # phase retrieval: draws differ by the task's trivial ambiguities (shifts, twin), not averageable;
            # keep the best data fit, as HIO keeps its best restart
            with torch.no_grad():
                fits = fidelity.expand(samples).residual(draws.to(fidelity.y.dtype))
            best = int(torch.argmin(fits))
            recon = draws[best:best + 1]
            params = {**params, "selected_sample": best, "sample_residuals": [float(f) for f in fits]}
    else:
        learned = None
        if entry.uses_learned_denoiser(params):
            prior = Path(prior) if prior else default_prior(task.name, "patch", task.op.image_shape[-1])
            cached_prior(prior, device)  # a bad checkpoint fails here, before any work
            learned = Counted(learned_denoiser(prior, torch.Generator().manual_seed(seed + 2), device=device,
                                               precision=precision))
        network = None
        if entry.network is not None:
            network = Path(prior) if prior else prior_path(entry.network)
            # a bad checkpoint fails here, before any work; loaded as run_classical loads it (CPU, cached once): the
            # translator runs beside the FBP image, 0.3 s per 256^2 slice
            _, _, info = cached_translator(network)
        recon = run_classical(entry, fidelity, baseline, params, progress, learned, network=network)
        if network is not None:
            params = {**params, "prior": str(network), "objective": info.get("objective")}
        if learned is not None:
            nfe = learned.nfe
            params = {**params, "prior": str(prior), "precision": resolve_precision(precision, device)}
    seconds = time.perf_counter() - t0
    if not torch.isfinite(recon).all():
        raise ValueError(f"{method} produced non-finite values on {task.name}; try other --param values")

    if truth is not None and task.align is not None:  # phase retrieval: the equivalent estimate closest to truth
        recon, baseline = task.align(recon, truth), task.align(baseline, truth)

    def score(rec: Tensor) -> dict:
        return image_metrics(rec, truth) if truth is not None else data_metrics(fidelity, rec)

    compared = {}
    for other in compare_entries:
        if other.name == method:
            continue
        t1 = time.perf_counter()
        if other.name == "admm-tv" and entry.kind == "sampler" and fast:
            rec, sec = x_fast, t_fast
        else:
            rec = run_classical(other, fidelity, baseline, other.resolve(task.name, noise_std=noise_std))
            sec = time.perf_counter() - t1
            if truth is not None and task.align is not None:
                rec = task.align(rec, truth)
        compared[other.name] = (rec, score(rec), sec)
    return RunResult(task, recon, baseline, std, seconds, nfe, params, score(recon), score(baseline), compared, y)
