"""Pyramidal diffusion sampling (Ryu & Ye 2022): coarse to fine with one position-conditioned network.

``pyramidal_sample`` draws the coarsest level (size / f_max) from noise with EDM's Heun sampler, then for each
finer level upsamples the result by 2 (nearest: the box averages of the coarse image are kept exactly), adds
fresh noise up to ``sigma_restart`` and runs Heun from there to sigma_min at the new size. Noise at
``sigma_restart`` hides the missing detail of the upsampled image (its high frequencies are zero), so the
network fills them in; the coarse layout survives because sigma_restart is small against the image's large-scale
contrast. The same ``denoise(x, sigma)`` serves every level: a patch prior takes any size, and its coordinates are
normalised over the image, so a pyramidal prior (:mod:`wavepatch.prior.pyramidal`) knows the resolution.

``pyramidal_super_resolve`` is the same chain started from a measured low-resolution image y with the box
average kept exact at every step: each denoised estimate is projected onto {x : box_f(x) = y} by adding the
nearest-neighbour upsampling of y - box_f(x) (the pseudo-inverse of the box average: the orthogonal projection).

NFE: network calls per image at each level (Heun: 2 levels - 1); ``nfe_pixel_weighted`` weighs each call by the
pixels the network processes at that side against a full-size call (for a patch prior its padded patch grid, so a
coarse level costs more than (side / size)^2 of a full one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

from wavepatch.physics.superres import SuperResolution
from wavepatch.prior.patches import patch_layout
from wavepatch.prior.pyramidal import check_factors
from wavepatch.sampling.steps import Counted
from wavepatch.sampling.unconditional import edm_heun, karras_sigmas
from wavepatch.types import Denoiser

Tensor = torch.Tensor


def split_steps(total_levels: int, n_levels: int, coarse_share: float = 0.5, coarse_min: int = 8) -> list[int]:
    """Noise levels per pyramid level, coarse first: the coarsest gets ``coarse_share`` of ``total_levels`` but
    at least ``coarse_min`` (it starts from sigma_max: with 4 Karras levels from 80 the coarse image is already
    wrong, with 10 it is not), the finer ones share the rest equally, at least 3 each (one Heun step from
    sigma_restart to sigma_min leaves visible noise). Small totals are raised to these minimums."""
    if n_levels == 1:
        return [max(3, total_levels)]
    first = max(coarse_min, round(total_levels * coarse_share))
    rest = max(3 * (n_levels - 1), total_levels - first)
    per, extra = divmod(rest, n_levels - 1)
    return [first] + [per + (1 if i < extra else 0) for i in range(n_levels - 1)]


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def project_box(x: Tensor, y: Tensor, factor: int) -> Tensor:
    """Orthogonal projection of x (B, 1, f h, f w) onto {x : box_f(x) = y}, y (B, 1, h, w): x + A^+(y - A x) with
    A the box-average ``SuperResolution`` (its pseudo-inverse is nearest upsampling)."""
    op = SuperResolution(factor, tuple(x.shape[1:]), kernel="box")
    return x + op.A_dagger(y - op.A(x))


@torch.no_grad()
def pyramidal_sample(denoise: Denoiser, n: int, size: int, factors: Sequence[int] = (1, 2, 4),
                     steps: Sequence[int] | int = 16, sigma_restart: float = 0.3, sigma_min: float = 0.002,
                     sigma_max: float = 80.0, generator: torch.Generator | None = None,
                     device: str | torch.device = "cpu", progress: bool = False,
                     y: Tensor | None = None, pixels: Callable[[int], float] | None = None) -> tuple[Tensor, dict]:
    """``n`` images (n, 1, size, size) in [0, 1] units, coarse to fine; returns (images, info).

    factors: the downsampling factors of the pyramid (powers of 2 including 1; consecutive levels differ by 2).
    steps: Karras noise levels per pyramid level, coarse first (one int: ``split_steps`` of that total, half to
    the coarsest, at least 8 there and 3 at each finer level);
    sigma_restart: noise level each finer level restarts from (data units). y: a measured low-resolution image
    (n, 1, size / f_max, size / f_max), box averages of the target: the coarsest level is y itself and every
    finer level keeps box_f(x) = y exact (super-resolution; see the module docstring).
    pixels: the pixels one network call processes for an image of a given side (default side^2, a whole-image
    network; a patch prior processes its zero-padded patch grid: :func:`patch_grid_pixels`).
    info: per_level (side, levels, nfe), nfe (per image), nfe_pixel_weighted (sum of nfe * pixels(side) /
    pixels(size): the cost in full-resolution calls)."""
    fs = check_factors(factors, size)[::-1]  # coarse first
    if not 0 < sigma_restart < sigma_max:
        raise ValueError(f"sigma_restart must be in (0, sigma_max), got {sigma_restart}")
    per_level = split_steps(steps, len(fs)) if isinstance(steps, int) else [int(s) for s in steps]
    if len(per_level) != len(fs) or min(per_level[1 if y is not None else 0:]) < 1:
        raise ValueError(f"steps needs one positive count per pyramid level ({len(fs)}), got {tuple(per_level)}")
    counted = Counted(denoise)
    info = []
    if y is not None:
        if y.shape != (n, 1, size // fs[0], size // fs[0]):
            raise ValueError(f"y must be (n, 1, {size // fs[0]}, {size // fs[0]}), got {tuple(y.shape)}")
        y = y.to(device, torch.float32)
    x = None
    for level, (f, count) in enumerate(zip(fs, per_level, strict=True)):
        side = size // f
        if level == 0 and y is not None:  # super-resolution: the coarsest level is the measurement
            x = y
            info.append({"side": side, "levels": 0, "nfe": 0})
            continue
        before = counted.nfe
        z = torch.randn((n, 1, side, side), generator=generator,
                        device=generator.device if generator else "cpu").to(device, torch.float32)
        if level == 0:
            sigmas = karras_sigmas(count, sigma_min, sigma_max, device=device)
            x = z * float(sigmas[0])
        else:
            sigmas = karras_sigmas(count, sigma_min, sigma_restart, device=device)
            x = _upsample(x) + z * sigma_restart
        if y is None:
            x = edm_heun(counted, x, sigmas, progress=progress)
        else:
            x = project_box(edm_heun(_projected(counted, y, fs[0] // f), x, sigmas, progress=progress), y,
                            fs[0] // f)
        info.append({"side": side, "levels": count, "nfe": counted.nfe - before})
    nfe = sum(d["nfe"] for d in info)
    cost = pixels or (lambda side: float(side) ** 2)
    return x, {"per_level": info, "nfe": nfe,
               "nfe_pixel_weighted": sum(d["nfe"] * cost(d["side"]) for d in info) / cost(size)}


def patch_grid_pixels(patch: int) -> Callable[[int], float]:
    """Pixels a PaDIS patch denoiser feeds its network per call on a side x side image: the K x K grid of
    patch x patch patches, K = side // patch + 1 (:func:`~wavepatch.prior.patches.patch_layout`)."""
    def pixels(side: int) -> float:
        k, _ = patch_layout(side, patch)
        return float(k * patch) ** 2
    return pixels


def _projected(denoise: Denoiser, y: Tensor, factor: int) -> Denoiser:
    """The denoiser followed by the box-average projection onto the measurement (DDNM-style consistency)."""
    def step(x: Tensor, sigma) -> Tensor:
        return project_box(denoise(x, sigma), y, factor)
    return step


def pyramidal_super_resolve(denoise: Denoiser, y: Tensor, factor: int, steps: Sequence[int] | int = 12,
                            sigma_restart: float = 0.3, **kwargs) -> tuple[Tensor, dict]:
    """Upsample y (B, 1, h, w) by ``factor`` (a power of 2) through the pyramid: (B, 1, factor h, factor w)
    whose factor x factor box averages equal y; kwargs as :func:`pyramidal_sample`. steps: per finer level
    (one int: the same at each)."""
    if factor < 2 or factor & (factor - 1):
        raise ValueError(f"super-resolution factor must be a power of 2 >= 2, got {factor}")
    if y.ndim != 4 or y.shape[1] != 1 or y.shape[-1] != y.shape[-2]:
        raise ValueError(f"y must be (B, 1, h, h), got {tuple(y.shape)}")
    factors = [2**k for k in range(factor.bit_length())]  # 1, 2, ..., factor
    per_level = [0] + ([int(steps)] * (len(factors) - 1) if isinstance(steps, int) else list(steps))
    return pyramidal_sample(denoise, y.shape[0], factor * y.shape[-1], factors, per_level,
                            sigma_restart=sigma_restart, y=y, **kwargs)
