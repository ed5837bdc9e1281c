"""Reconstruction with a learned prior: a registered sampler, a data fidelity and a prior checkpoint -> posterior
samples.

``run_sampler`` loads the prior once per file (``cached_prior``), builds its denoiser (PaDIS random-shift patches
for a patch prior, unless ``patch_mode`` says otherwise), the noise schedule the method declares, the start
(pure noise at ``sigma_max``, or with ``fast`` the ADMM-TV reconstruction at ``sigma_start``), and calls the
method's sampler with the method's own parameters. For PaDIS, fast mode runs the method's ``fast_run`` (DDNM's
update with the random-shift patch denoiser and CG data consistency: the decomposed diffusion sampler of Chung et
al. 2024): one denoiser call per level and no backpropagation through the network.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from tqdm.auto import tqdm

from wavepatch.fidelity import DataFidelity
from wavepatch.methods import SCHEDULE_PARAMS, Method
from wavepatch.prior.checkpoint import load_prior, load_translator
from wavepatch.prior.model import make_denoiser
from wavepatch.prior.patches import sliced_draw
from wavepatch.resources import prior_path
from wavepatch.sampling.posterior import warm_start
from wavepatch.sampling.steps import Counted, NoiseFn, randn_like
from wavepatch.sampling.unconditional import geometric_sigmas, karras_sigmas
from wavepatch.types import Denoiser

Tensor = torch.Tensor
SCHEDULES = {"karras": karras_sigmas, "geometric": geometric_sigmas}


# image sizes below this (the geometric mean of 128 and 256) get the CT priors trained at 128^2: on 20-view CT of
# four training slices at 128^2 (fast mode), ct_patch128 / ct_whole128 gave +2.2 / +6.1 dB over the 256^2 priors,
# and at 256^2 the 256^2 priors +4.3 / +8.0 dB over the 128^2 ones (benchmarks/results/prior_size)
CT_128_BELOW = 181


def default_prior(task_name: str, kind: str = "whole", size: int | None = None) -> Path:
    """The bundled prior for a task: MRI -> mri_patch256; CT and CT-image restoration -> ct_patch256 for a patch
    prior (``kind``), ct_whole256 for a whole-image one, or their 128^2 versions for images of ``size`` (pixels
    per side) below ``CT_128_BELOW``."""
    if task_name == "mri":
        return prior_path("mri_patch256")
    res = 128 if size is not None and size < CT_128_BELOW else 256
    return prior_path(f"ct_patch{res}" if kind == "patch" else f"ct_whole{res}")


def cached_prior(path: str | Path, device: str = "cpu"):
    """``load_prior`` once per (file, modification time, device): a bench run reconstructs many slices with the
    same prior. The model is in eval mode and never modified by the samplers."""
    p = Path(path)
    return _load_cached(str(p.resolve()), p.stat().st_mtime_ns if p.exists() else 0, str(device))


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, device: str):
    return load_prior(path, device=device)


def cached_translator(path: str | Path, device: str = "cpu"):
    """``load_translator`` (translator, config, training info) once per (file, modification time, device)."""
    p = Path(path)
    return _load_translator_cached(str(p.resolve()), p.stat().st_mtime_ns if p.exists() else 0, str(device))


@lru_cache(maxsize=4)
def _load_translator_cached(path: str, mtime_ns: int, device: str):
    return load_translator(path, device=device)


def learned_denoiser(prior: str | Path, generator: torch.Generator, device: str = "cpu",
                     precision: str = "auto") -> Denoiser:
    """A prior's ``denoise(x, sigma)`` (PaDIS random-shift patches for a patch prior) without autograd, for
    PnP-ADMM / RED; inputs on any device, computed on ``device``."""
    model, cfg = cached_prior(prior, device)
    base = make_denoiser(model, cfg, mode="padis", generator=generator, precision=precision)

    @torch.no_grad()
    def denoise(x: Tensor, sigma: float) -> Tensor:
        return base(x.to(device), sigma).to(x.device)

    return denoise


def _cut(whole: NoiseFn, shard: tuple[int, int, int]) -> NoiseFn:
    """``whole``'s draws for items lo..hi of a batch of ``total`` (shard = (total, lo, hi)): drawn for the whole
    batch and cut, so a shard gets the numbers the whole batch would and the generator stays in step."""
    total, lo, hi = shard

    def draws(x: Tensor, generator: torch.Generator | None) -> Tensor:
        return whole(torch.zeros((total, *x.shape[1:]), dtype=x.dtype, device=x.device), generator)[lo:hi]
    return draws


def noise_schedule(method: Method, params: dict, fast: bool = False, device: str = "cpu") -> Tensor:
    """The method's noise levels: ``steps`` levels from sigma_max (sigma_start with ``fast``) to sigma_min, then 0."""
    kind = (method.fast_schedule or method.schedule) if fast else method.schedule
    top = params["sigma_start"] if fast else params["sigma_max"]
    return SCHEDULES[kind](int(params["steps"]), params["sigma_min"], top).to(device)


def run_sampler(method: Method, fidelity: DataFidelity, prior: str | Path, params: dict,
                generator: torch.Generator, samples: int = 1, fast: bool = False, x_fast: Tensor | None = None,
                patch_mode: str = "padis", device: str = "cpu", progress: bool = False,
                precision: str = "auto", noise: NoiseFn | None = None,
                shard: tuple[int, int, int] | None = None,
                wrap: Callable[[Denoiser], Denoiser] | None = None) -> tuple[Tensor, int]:
    """``samples`` posterior samples (K, *image_shape) of the measurement in ``fidelity`` (batch 1), on the CPU,
    and the NFE per sample (the K samples run as one batch).

    fast: warm start from ``x_fast`` (the ADMM-TV reconstruction, (1, *image_shape)) at sigma_start; sigma_start
    0 returns ``x_fast`` itself (0 NFE).
    noise: the sampler's noise draws (start and re-noising) instead of independent ones, e.g.
    :func:`~wavepatch.sampling.steps.slerp_slice_noise` across a slice stack; samplers without a ``noise``
    argument refuse it. shard: (total, lo, hi) when these ``samples`` are items lo..hi of a batch of ``total``
    run by several processes: every random draw (start, re-noising, the patch border noise) is made for the
    whole batch and cut, so each item gets the numbers it would get in one process. wrap: applied to the prior's
    denoiser (e.g. ``volume.rotating_planes``)."""
    model, cfg = cached_prior(prior, device)
    if fast and float(params.get("sigma_start", 1.0)) == 0.0:  # no prior step: the warm start itself, 0 NFE
        if x_fast is None:
            raise ValueError("fast mode needs the warm-start image")
        return x_fast.detach().float().cpu().expand(samples, *fidelity.op.image_shape).clone(), 0
    if method.patch_only and cfg.kind != "patch":
        raise ValueError(f"{method.name} needs a patch prior; {prior} is a {cfg.kind} prior")
    draw = sliced_draw(*shard) if shard is not None else None
    denoise = make_denoiser(model, cfg, mode=patch_mode, generator=generator, precision=precision, draw=draw)
    denoise = Counted(wrap(denoise) if wrap is not None else denoise)
    draws = _cut(noise or randn_like, shard) if shard is not None else noise or randn_like
    fidelity = fidelity.expand(samples)
    sigmas = noise_schedule(method, params, fast, device)
    shape = (samples, *fidelity.op.image_shape)
    if fast:
        if x_fast is None:
            raise ValueError("fast mode needs the warm-start image")
        x = warm_start(x_fast.to(device).expand(shape), float(sigmas[0]), generator, draws)
    else:
        x = float(sigmas[0]) * draws(torch.zeros(shape, device=device), generator)
    run = method.fast_run if fast and method.fast_run is not None else method.run
    mode = "fast" if fast else "slow"
    kwargs = {p.name: params[p.name] for p in method.params
              if p.name not in SCHEDULE_PARAMS and p.applies in ("always", mode)}
    if draws is not randn_like:
        if "noise" not in inspect.signature(run).parameters:
            raise ValueError(f"{method.name}{' --fast' if fast else ''} has no noise argument: its draws cannot be "
                             "correlated (iscs) or sharded across processes (padis --fast and ddnm can)")
        kwargs["noise"] = draws
    with tqdm(total=len(sigmas) - 1, disable=not progress, desc=method.name, leave=False) as bar:
        def callback(state: dict) -> None:
            bar.total = state["n"]
            bar.update(1)

        out = run(denoise, fidelity, x, sigmas, generator=generator, callback=callback, **kwargs)
    return out.detach().float().cpu(), denoise.nfe
